use std::ops::ControlFlow;

use chrono::NaiveDate;
use proptest::prelude::*;
use referrals_domain::values::Hours;

use super::*;

/// The columns and every row of a file.
type ReadFile<F> = (
    <F as CsvFormat>::Columns,
    Vec<ParsedRow<<F as CsvFormat>::Row>>,
);

/// Reads `input` fully and returns the columns and every row.
fn read_all<F: CsvFormat>(format: &F, input: &[u8]) -> Result<ReadFile<F>, ReadError> {
    let mut columns = None;
    let mut rows = Vec::new();
    read_csv(
        format,
        input,
        |found| {
            columns = Some(found.clone());
            ControlFlow::Continue(())
        },
        |row| {
            rows.push(row);
            ControlFlow::Continue(())
        },
    )?;
    Ok((columns.expect("a header was read"), rows))
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

#[test]
fn crlf_and_byte_order_mark_give_file_lines() {
    let input =
        "\u{feff}external_worker_id,week_ending,hours\r\nW-1,2026-09-13,8\r\nW-2,2026-09-13,9\r\n";

    let (columns, rows) = read_all(&TimesheetFormat, input.as_bytes()).unwrap();

    assert_eq!(columns.shape, TimesheetShape::Weekly);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 2);
    assert_eq!(rows[1].line, 3);
    assert_eq!(rows[0].row.as_ref().unwrap().external_worker_id, "W-1");
}

#[test]
fn cumulative_header_in_any_order_with_extra_columns() {
    let input = "Site,TOTAL_HOURS, as_of ,external_worker_id\nNorth,120.5,2026-09-13,\"W, 1\"\n";

    let (columns, rows) = read_all(&TimesheetFormat, input.as_bytes()).unwrap();

    assert_eq!(columns.shape, TimesheetShape::Cumulative);
    let row = rows[0].row.as_ref().unwrap();
    assert_eq!(row.external_worker_id, "W, 1");
    assert_eq!(row.date, date("2026-09-13"));
    assert_eq!(row.hours, Hours::parse("120.5").unwrap());
}

#[test]
fn empty_input_has_no_header() {
    let error = read_all(&TimesheetFormat, b"").unwrap_err();

    assert!(matches!(
        error,
        ReadError::Header(HeaderError::Missing { .. })
    ));
}

#[test]
fn repeated_column_is_rejected() {
    let error = read_all(&PaidFormat, b"payout_id,paid_on,reference,reference\n").unwrap_err();

    assert!(
        error.to_string().contains("reference more than once"),
        "{error}"
    );
}

#[test]
fn row_that_is_not_utf8_is_invalid() {
    let input = b"external_worker_id,week_ending,hours\nW-\xff,2026-09-13,8\n";

    let (_, rows) = read_all(&TimesheetFormat, input).unwrap();

    let reason = rows[0].row.as_ref().unwrap_err();
    assert!(reason.contains("not valid UTF-8"), "{reason}");
}

#[test]
fn long_value_is_cut_in_the_reason() {
    let long = "9".repeat(500);
    let input = format!("external_worker_id,week_ending,hours\nW-1,2026-09-13,{long}.123\n");

    let (_, rows) = read_all(&TimesheetFormat, input.as_bytes()).unwrap();

    let reason = rows[0].row.as_ref().unwrap_err();
    assert!(reason.len() < 200, "{reason}");
    assert!(reason.contains('…'), "{reason}");
}

#[test]
fn known_candidate_reason_never_quotes_the_address() {
    let format = KnownCandidateFormat {
        today: date("2026-12-01"),
    };
    let input =
        "email,phone,last_contact_on\nsecret-address,,2026-11-01\n,not a phone 12,2026-11-01\n";

    let (_, rows) = read_all(&format, input.as_bytes()).unwrap();

    for row in rows {
        let reason = row.row.unwrap_err();
        assert!(!reason.contains("secret-address"), "{reason}");
        assert!(!reason.contains("not a phone"), "{reason}");
    }
}

/// Generates worker ids as back offices write them: printable text without surrounding
/// spaces.
fn worker_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 ,\"'./_-]{0,30}[A-Za-z0-9]"
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    (0_u64..20_000).prop_map(|days| {
        date("2000-01-01")
            .checked_add_days(chrono::Days::new(days))
            .unwrap()
    })
}

fn any_hours() -> impl Strategy<Value = Hours> {
    (0_i64..=Hours::MAX_PARSED.hundredths())
        .prop_map(|hundredths| Hours::from_hundredths(hundredths).unwrap())
}

proptest! {
    #[test]
    fn timesheet_reader_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_all(&TimesheetFormat, &input);
    }

    #[test]
    fn timesheet_rows_after_a_valid_header_never_panic(body in "[ -~\r\n\"\u{feff}é]{0,300}") {
        let input = format!("external_worker_id,week_ending,hours\n{body}");
        let _ = read_all(&TimesheetFormat, input.as_bytes());
        let input = format!("external_worker_id,as_of,total_hours\n{body}");
        let _ = read_all(&TimesheetFormat, input.as_bytes());
    }

    #[test]
    fn known_candidate_and_paid_readers_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let format = KnownCandidateFormat { today: date("2026-12-01") };
        let _ = read_all(&format, &input);
        let _ = read_all(&PaidFormat, &input);
        let mut with_header = b"email,phone,last_contact_on\n".to_vec();
        with_header.extend_from_slice(&input);
        let _ = read_all(&format, &with_header);
        let mut with_header = b"payout_id,paid_on,reference\n".to_vec();
        with_header.extend_from_slice(&input);
        let _ = read_all(&PaidFormat, &with_header);
    }

    #[test]
    fn weekly_rows_round_trip(
        rows in proptest::collection::vec((worker_id(), any_date(), any_hours()), 0..20),
        crlf in any::<bool>(),
    ) {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        writer.write_record(["external_worker_id", "week_ending", "hours"]).unwrap();
        for (worker, day, hours) in &rows {
            writer.write_record([worker.clone(), day.to_string(), hours.to_string()]).unwrap();
        }
        let bytes = writer.into_inner().unwrap();

        let (columns, parsed) = read_all(&TimesheetFormat, &bytes).unwrap();

        prop_assert_eq!(columns.shape, TimesheetShape::Weekly);
        let parsed: Vec<TimesheetRow> = parsed.into_iter().map(|row| row.row.unwrap()).collect();
        let expected: Vec<TimesheetRow> = rows
            .into_iter()
            .map(|(external_worker_id, date, hours)| TimesheetRow { external_worker_id, date, hours })
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn paid_rows_round_trip(
        rows in proptest::collection::vec((any::<u128>(), any_date(), "[A-Za-z0-9][A-Za-z0-9 ,/-]{0,20}[A-Za-z0-9]"), 0..20),
    ) {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["payout_id", "paid_on", "reference"]).unwrap();
        for (id, day, reference) in &rows {
            writer.write_record([Uuid::from_u128(*id).to_string(), day.to_string(), reference.clone()]).unwrap();
        }
        let bytes = writer.into_inner().unwrap();

        let (_, parsed) = read_all(&PaidFormat, &bytes).unwrap();

        let parsed: Vec<PaidRow> = parsed.into_iter().map(|row| row.row.unwrap()).collect();
        let expected: Vec<PaidRow> = rows
            .into_iter()
            .map(|(id, paid_on, reference)| PaidRow { payout_id: Uuid::from_u128(id), paid_on, reference })
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn known_candidate_rows_round_trip(
        rows in proptest::collection::vec(("[a-z]{1,10}", "[a-z]{1,10}", 2_000_000_u32..9_999_999, any_date()), 0..20),
    ) {
        let format = KnownCandidateFormat { today: date("2060-01-01") };
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["email", "phone", "last_contact_on"]).unwrap();
        for (local, domain, number, day) in &rows {
            writer.write_record([format!("{local}@{domain}.example"), format!("+1415{number}"), day.to_string()]).unwrap();
        }
        let bytes = writer.into_inner().unwrap();

        let (_, parsed) = read_all(&format, &bytes).unwrap();

        prop_assert_eq!(parsed.len(), rows.len());
        for (row, (local, domain, number, day)) in parsed.into_iter().zip(rows) {
            let row = row.row.unwrap();
            let email = row.email.unwrap();
            let phone = row.phone.unwrap();
            prop_assert_eq!(email.as_str(), format!("{local}@{domain}.example"));
            prop_assert_eq!(phone.as_str(), format!("+1415{number}"));
            prop_assert_eq!(row.last_contact_on, day);
        }
    }
}
