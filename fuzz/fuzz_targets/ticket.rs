//! Websocket tickets (`ticket::TicketKey::sign` / `verify`).
//!
//! Invariants:
//! - the input, read as a ticket, never verifies under a fixed key;
//! - a ticket built from the input signs and verifies back to itself
//!   (under a key also taken from the input), and is expired one second
//!   after its expiry;
//! - changing any one character of a signed ticket, or any one bit of its
//!   decoded bytes, never verifies; neither does another key.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use transponder::ids::Id;
use transponder::ticket::{Ticket, TicketError, TicketKey};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The key random input is checked against. No seed is signed with it (the
/// seed corpus holds ticket.rs's golden ticket, signed with [7; 32]).
const FIXED_KEY: [u8; 32] = [0x5A; 32];

fuzz_target!(|input: &[u8]| {
    let fixed = TicketKey::from_bytes(FIXED_KEY);
    let as_text = String::from_utf8_lossy(input);
    for now in [0, u64::MAX] {
        assert!(fixed.verify(&as_text, now).is_err(), "forged: {as_text:?}");
    }

    // 32 key bytes, 4 words, a position and a replacement byte.
    if input.len() < 32 + 32 + 2 {
        return;
    }
    let key = TicketKey::from_bytes(input[..32].try_into().unwrap());
    let word = |i: usize| u64::from_le_bytes(input[32 + 8 * i..40 + 8 * i].try_into().unwrap());
    let id_or =
        |raw: u64, fallback: &str| Id::from_raw(raw).unwrap_or(Id::parse(fallback).unwrap());
    let ticket = Ticket {
        user: id_or(word(0), "U0G9QF9C6"),
        team: id_or(word(1), "T0001"),
        expires_unix_secs: word(2),
        nonce: word(3),
    };
    let signed = key.sign(&ticket);
    assert_eq!(key.verify(&signed, ticket.expires_unix_secs), Ok(ticket));
    assert_eq!(key.verify(&signed, 0), Ok(ticket));
    if let Some(later) = ticket.expires_unix_secs.checked_add(1) {
        assert_eq!(key.verify(&signed, later), Err(TicketError::Expired));
    }
    if input[..32] != FIXED_KEY {
        assert_eq!(fixed.verify(&signed, 0), Err(TicketError::BadSignature));
    }

    let (pos, replacement) = (usize::from(input[64]), input[65]);
    // One character changed.
    let mut chars = signed.clone().into_bytes();
    let at = pos % chars.len();
    if chars[at] != replacement && replacement.is_ascii() {
        chars[at] = replacement;
        let changed = String::from_utf8(chars).unwrap();
        let result = key.verify(&changed, 0);
        assert!(result.is_err(), "one character changed still verifies");
        if ALPHABET.contains(&replacement) {
            // Every character carries 6 bits of the 48 bytes: still
            // decodable, so it is the signature that fails.
            assert_eq!(result, Err(TicketError::BadSignature));
        }
    }
    // One bit of the decoded bytes flipped.
    let mut raw = URL_SAFE_NO_PAD.decode(&signed).unwrap();
    let bit = (pos + 256 * usize::from(replacement)) % (raw.len() * 8);
    raw[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(
        key.verify(&URL_SAFE_NO_PAD.encode(&raw), 0),
        Err(TicketError::BadSignature)
    );
    // Cut short or extended.
    assert!(key.verify(&signed[..signed.len() - 1], 0).is_err());
    assert!(key.verify(&format!("{signed}A"), 0).is_err());
});
