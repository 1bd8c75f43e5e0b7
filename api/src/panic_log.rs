//! The process's panic hook: one error log line with the thread and source location of a
//! panic, without the panic message when that message was built at run time.
//!
//! The standard hook prints the whole message to standard error. A message formatted at
//! run time (`panic!("{x}")`, `unwrap` and `expect` on an `Err`, a failed `assert_eq!`)
//! can contain the values involved, and those may be personal data. A message that is a
//! string literal cannot, so it is kept.

use std::any::Any;
use std::panic::PanicHookInfo;

/// Replaces the panic hook with one that logs through `tracing` at error level. The
/// `CatchPanicLayer` of the HTTP router still turns a handler's panic into a 500 response.
pub fn install() {
    std::panic::set_hook(Box::new(log_panic));
}

fn log_panic(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map(|location| {
            format!(
                "{}:{}:{}",
                location.file(),
                location.line(),
                location.column()
            )
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let message = literal_message(info.payload()).unwrap_or(WITHHELD);
    tracing::error!(thread, location, message, "panicked");
}

/// The message logged in place of one formatted at run time.
const WITHHELD: &str = "[withheld: formatted at run time]";

/// Returns the panic message when it is a string literal, which contains no run-time values.
/// `panic!` with a literal and no arguments passes a `&'static str`. Every formatted
/// message arrives as a `String`, and any other payload type comes from
/// `std::panic::panic_any`.
fn literal_message(payload: &(dyn Any + Send)) -> Option<&'static str> {
    payload.downcast_ref::<&'static str>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_message_is_kept() {
        let payload: Box<dyn Any + Send> = Box::new("the outbox lease expired");

        assert_eq!(
            literal_message(payload.as_ref()),
            Some("the outbox lease expired")
        );
    }

    #[test]
    fn formatted_message_is_withheld() {
        let payload: Box<dyn Any + Send> =
            Box::new(format!("no referral for {}", "ada@example.com"));

        assert_eq!(literal_message(payload.as_ref()), None);
    }

    #[test]
    fn real_panic_payloads_are_classified() {
        let literal = std::panic::catch_unwind(|| panic!("a literal message")).unwrap_err();
        let email = "ada@example.com";
        let formatted =
            std::panic::catch_unwind(|| panic!("lookup of {email} failed")).unwrap_err();
        let unwrapped =
            std::panic::catch_unwind(|| "x".parse::<u8>().expect("a number")).unwrap_err();

        assert_eq!(literal_message(literal.as_ref()), Some("a literal message"));
        assert_eq!(literal_message(formatted.as_ref()), None);
        assert_eq!(literal_message(unwrapped.as_ref()), None);
    }
}
