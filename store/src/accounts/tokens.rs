//! Bearer and invitation tokens: 32 random bytes in base64url behind a prefix that names
//! the kind, stored only as the SHA-256 hash of the whole token text.
//!
//! The prefix lets a reader (and secret scanners) tell a token's kind at a glance, and
//! lets authentication pick the right table without a second lookup. Because the token
//! carries 256 random bits, a fast hash is enough: there is nothing to guess, so the
//! stored hash cannot be reversed by trying candidates as a password hash could.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Number of random bytes in every token.
const TOKEN_BYTES: usize = 32;

/// Kind of token, named by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A sign-in session (`rfs_`).
    Session,
    /// A personal access token for an integration (`rfp_`).
    AccessToken,
    /// A one-time invitation (`rfi_`).
    Invitation,
}

impl TokenKind {
    /// Returns the prefix that starts every token of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "rfs_",
            TokenKind::AccessToken => "rfp_",
            TokenKind::Invitation => "rfi_",
        }
    }

    /// Returns the kind named by a token's prefix, or `None` for an unknown prefix.
    pub fn of(token: &str) -> Option<TokenKind> {
        [
            TokenKind::Session,
            TokenKind::AccessToken,
            TokenKind::Invitation,
        ]
        .into_iter()
        .find(|kind| token.starts_with(kind.prefix()))
    }
}

/// A freshly generated token: the text for the client and the hash for the database.
pub(crate) struct NewToken {
    pub(crate) text: Zeroizing<String>,
    pub(crate) hash: Vec<u8>,
}

/// Generates a token of `kind` from the operating system's random generator.
pub(crate) fn generate(kind: TokenKind) -> NewToken {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    OsRng.fill_bytes(bytes.as_mut());
    let text = Zeroizing::new(format!(
        "{}{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(bytes.as_ref())
    ));
    let hash = hash(&text);
    NewToken { text, hash }
}

/// Computes the stored form of a token: SHA-256 of its whole text, prefix included.
pub(crate) fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_prefix_and_256_random_bits() {
        let token = generate(TokenKind::Session);

        let body = token.text.strip_prefix("rfs_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(TokenKind::of(&token.text), Some(TokenKind::Session));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        let token = generate(TokenKind::AccessToken);

        assert_eq!(token.hash, hash(&token.text));
        assert_eq!(token.hash.len(), 32);
        assert_ne!(token.hash, hash(&generate(TokenKind::AccessToken).text));
    }

    #[test]
    fn unknown_prefix_has_no_kind() {
        assert_eq!(TokenKind::of("Bearer abc"), None);
        assert_eq!(TokenKind::of("rfi_abc"), Some(TokenKind::Invitation));
    }
}
