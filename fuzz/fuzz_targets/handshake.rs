//! The websocket upgrade request (`gateway::handshake::parse_upgrade`) and
//! the query of the request target (`query_param`).
//!
//! Invariants, beyond "never panics":
//! - the gateway calls the parser on every longer prefix of what it has
//!   read, so the answer for a prefix is `Partial` or exactly the answer
//!   for the whole input (no error that more bytes would have cured, no
//!   request that more bytes would change);
//! - a complete request is within `MAX_REQUEST_BYTES`, re-parses the same
//!   from its own bytes, and its key and answers make well-formed HTTP;
//! - an error's response is well-formed HTTP with a JSON body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use transponder::gateway::handshake::{
    accept_response, parse_upgrade, query_param, ParseOutcome, MAX_REQUEST_BYTES,
};

/// Prefixes checked per input (besides every one of a short input).
const PREFIXES_CHECKED: usize = 16;
/// Inputs up to this long have every prefix checked.
const EVERY_PREFIX_BYTES_MAX: usize = 64;

fuzz_target!(|input: &[u8]| {
    let whole = parse_upgrade(input);
    let prefixes: Vec<usize> = if input.len() <= EVERY_PREFIX_BYTES_MAX {
        (0..input.len()).collect()
    } else {
        // Spread over the input, from its own bytes so the fuzzer steers them.
        (0..PREFIXES_CHECKED)
            .map(|i| {
                let seed = usize::from(input[i % input.len()]) << 8
                    | usize::from(input[(i * 7 + 3) % input.len()]);
                (seed * (i + 1)) % input.len()
            })
            .chain([input.len() - 1, MAX_REQUEST_BYTES.min(input.len() - 1)])
            .collect()
    };
    for end in prefixes {
        let part = parse_upgrade(&input[..end]);
        assert!(
            part == Ok(ParseOutcome::Partial) || part == whole,
            "prefix of {end} bytes: {part:?}, whole {} bytes: {whole:?}",
            input.len()
        );
    }

    match whole {
        Ok(ParseOutcome::Partial) => {
            assert!(
                input.len() < MAX_REQUEST_BYTES,
                "Partial at {} bytes",
                input.len()
            )
        }
        Ok(ParseOutcome::Complete { request, consumed }) => {
            assert!(consumed <= input.len() && consumed <= MAX_REQUEST_BYTES);
            assert_eq!(
                parse_upgrade(&input[..consumed]),
                Ok(ParseOutcome::Complete {
                    request: request.clone(),
                    consumed
                })
            );
            assert!(request.path.starts_with('/'), "{:?}", request.path);
            assert!(!request.path.contains('?') && !request.path.contains('#'));
            assert_eq!(request.key.len(), 24);
            let accept = accept_response(&request.key);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            assert_eq!(
                response.parse(&accept),
                Ok(httparse::Status::Complete(accept.len()))
            );
            assert_eq!(response.code, Some(101));
            for name in ["ticket", "since", "batch_presence_aware"] {
                let _ = query_param(&request.query, name);
            }
            // A parameter name from the query itself, so the fuzzer can make
            // names match.
            let first_name = request.query.split(['=', '&']).next().unwrap_or("");
            if let Some(v) = query_param(&request.query, first_name) {
                assert!(v.len() <= request.query.len());
            }
        }
        Err(e) => {
            let resp = e.response();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(n)) = response.parse(&resp) else {
                panic!("bad error response for {e:?}");
            };
            assert_eq!(response.code, Some(e.status()));
            let body: serde_json::Value = serde_json::from_slice(&resp[n..]).expect("JSON body");
            assert_eq!(body["error"], e.code());
        }
    }
});
