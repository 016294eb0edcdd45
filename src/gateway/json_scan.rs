//! A one-pass JSON scanner that builds nothing: it walks a JSON text once,
//! holding it to exactly what `serde_json::from_slice::<Value>` accepts,
//! and hands its caller the object members it asks for as it meets them.
//! [`super::publish_frame`] reads a publish-stream frame with it.
//!
//! Why one pass: the frame parse was ~13% of a shard under deep publish
//! pipelines of 100-byte events (tuning/PROFILING.md): a UTF-8 pass over
//! the frame, serde over the frame (the event skipped as a `RawValue`),
//! then serde over the event again for its keys.
//!
//! Why exactly `Value`'s rules: a frame the fast path takes is not parsed
//! again until the channel server reads a stored event back
//! (`channel::persist`), which trusts it to be valid JSON. So whatever the
//! general path refuses is refused here too: control characters in
//! strings, bad escapes, unpaired surrogate escapes (serde's skipping of a
//! value lets those through; `Value` does not), numbers beyond f64, nesting
//! past serde_json's recursion limit, invalid UTF-8, anything after the
//! value. Every refusal is `None`: the caller's general path says why.

use std::borrow::Cow;

/// Brackets open at once that serde_json's `Value` takes: its recursion
/// limit is 128 and it refuses the 128th open bracket.
pub const DEPTH_MAX: u32 = 127;

/// A number token longer than this may be past f64's range even without
/// an exponent (f64::MAX has 309 integer digits), so it is checked.
const PLAIN_NUMBER_CHARS_MAX: usize = 300;

/// A walk over one JSON text; lives on the caller's stack.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Brackets open now.
    depth: u32,
    /// Bit `d - 1` tells whether the bracket open at depth `d` is an
    /// object (`DEPTH_MAX` < 128, so no allocation for the stack).
    objects: u128,
}

/// A string as it stands in the text, quotes included; already checked.
#[derive(Clone, Copy)]
pub struct RawStr<'a> {
    quoted: &'a [u8],
    escaped: bool,
}

impl<'a> RawStr<'a> {
    /// Between the quotes, escapes as written.
    fn raw(&self) -> &'a [u8] {
        &self.quoted[1..self.quoted.len() - 1]
    }

    /// The string's bytes, escapes decoded (to match a key against names:
    /// a key with escapes is rare, and is decoded only then).
    #[inline]
    pub fn bytes(&self) -> Option<Cow<'a, [u8]>> {
        if !self.escaped {
            return Some(Cow::Borrowed(self.raw()));
        }
        let decoded = serde_json::from_slice::<String>(self.quoted).ok()?;
        Some(Cow::Owned(decoded.into_bytes()))
    }

    /// The string, escapes decoded: borrowed unless it has escapes (rare:
    /// those are decoded by serde_json, which wrote the rules checked).
    #[inline]
    pub fn decoded(&self) -> Option<Cow<'a, str>> {
        if self.escaped {
            serde_json::from_slice::<String>(self.quoted)
                .ok()
                .map(Cow::Owned)
        } else {
            std::str::from_utf8(self.raw()).ok().map(Cow::Borrowed)
        }
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// The high bit of each byte of `chunk` that ends a run of plain string
/// bytes (`"`, `\` or a control character). Only the lowest set bit is
/// sure to be a match (a borrow can flag a byte above a match), and only
/// the lowest is used.
fn string_stops(chunk: u64) -> u64 {
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = chunk ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = chunk ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH_BITS
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner {
            bytes,
            pos: 0,
            depth: 0,
            objects: 0,
        }
    }

    /// Where the scanner stands: the first byte not yet read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The next value's first byte, after whitespace (not consumed).
    #[inline]
    pub fn peek_value(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.peek()
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    #[inline]
    fn open(&mut self, object: bool) -> Option<()> {
        if self.depth == DEPTH_MAX {
            return None;
        }
        if object {
            self.objects |= 1u128 << self.depth;
        } else {
            self.objects &= !(1u128 << self.depth);
        }
        self.depth += 1;
        self.pos += 1;
        Some(())
    }

    #[inline]
    fn close(&mut self) {
        self.depth -= 1;
        self.pos += 1;
    }

    #[inline]
    fn in_object(&self) -> bool {
        self.objects & (1u128 << (self.depth - 1)) != 0
    }

    /// Opens an object (the next value must be one).
    #[inline]
    pub fn begin_object(&mut self) -> Option<()> {
        (self.peek_value()? == b'{').then_some(())?;
        self.open(true)
    }

    /// The next key of the object just opened with [`Self::begin_object`],
    /// its colon consumed; its value must be read before the next call.
    /// `Some(None)` at the object's end. `first` is the caller's: true
    /// until the first call.
    #[inline(always)]
    pub fn next_key(&mut self, first: &mut bool) -> Option<Option<RawStr<'a>>> {
        match self.peek_value()? {
            b'}' => {
                self.close();
                return Some(None);
            }
            b',' if !*first => {
                self.pos += 1;
                self.skip_whitespace();
            }
            _ if !*first => return None,
            _ => {}
        }
        *first = false;
        self.key_and_colon().map(Some)
    }

    #[inline(always)]
    fn key_and_colon(&mut self) -> Option<RawStr<'a>> {
        self.eat(b'"')?;
        let key = self.string_rest()?;
        self.skip_whitespace();
        self.eat(b':')?;
        Some(key)
    }

    /// A string value.
    #[inline(always)]
    pub fn string(&mut self) -> Option<RawStr<'a>> {
        self.skip_whitespace();
        self.eat(b'"')?;
        self.string_rest()
    }

    /// `true` or `false`.
    #[inline]
    pub fn bool(&mut self) -> Option<bool> {
        match self.peek_value()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// `null`, or an integer in u64's range written without a fraction,
    /// an exponent or a sign (what serde takes as an `Option<u64>`).
    pub fn null_or_u64(&mut self) -> Option<Option<u64>> {
        if self.peek_value()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.pos += 1;
        }
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(Some(n))
    }

    /// Skips one value of any kind, checking all of it.
    pub fn skip_value(&mut self) -> Option<()> {
        // Iterative, not recursive: the depth bound is serde_json's, not
        // the stack's.
        let floor = self.depth;
        'value: loop {
            match self.peek_value()? {
                b'{' => {
                    self.open(true)?;
                    if self.peek_value()? == b'}' {
                        self.close();
                    } else {
                        self.key_and_colon()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.open(false)?;
                    if self.peek_value()? == b']' {
                        self.close();
                    } else {
                        continue 'value;
                    }
                }
                b'"' => {
                    self.pos += 1;
                    self.string_body()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close the brackets it ends, until a comma
            // calls for the next value or the skipped value is whole.
            while self.depth > floor {
                let object = self.in_object();
                match self.peek_value()? {
                    b',' => {
                        self.pos += 1;
                        if object {
                            self.skip_whitespace();
                            self.key_and_colon()?;
                        }
                        continue 'value;
                    }
                    b'}' if object => self.close(),
                    b']' if !object => self.close(),
                    _ => return None,
                }
            }
            return Some(());
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Option<()> {
        self.skip_whitespace();
        (self.pos == self.bytes.len()).then_some(())
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, finite as an f64.
    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                // One leading zero only ("01" is not a number).
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            (self.digits() > 0).then_some(())?;
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            (self.digits() > 0).then_some(())?;
            exponent = true;
        }
        if exponent || self.pos - start > PLAIN_NUMBER_CHARS_MAX {
            // Rare: serde_json itself says whether it is in range, so the
            // bound is exactly the general path's (float_roundtrip).
            serde_json::from_slice::<f64>(&self.bytes[start..self.pos]).ok()?;
        }
        Some(())
    }

    /// The rest of a string whose opening quote was read.
    // Inlined, so the string reaches the caller in registers: returned
    // through memory, its load after the call missed store forwarding
    // and cost more than scanning a key.
    #[inline(always)]
    fn string_rest(&mut self) -> Option<RawStr<'a>> {
        let open = self.pos - 1;
        let escaped = self.string_body()?;
        let quoted = &self.bytes[open..self.pos];
        Some(RawStr { quoted, escaped })
    }

    /// Checks the rest of a string, its closing quote included; whether it
    /// had escapes.
    fn string_body(&mut self) -> Option<bool> {
        let open = self.pos - 1;
        let mut escaped = false;
        // Every plain byte read, OR-ed: a high bit means non-ASCII, whose
        // UTF-8 is checked at the end (over this string only).
        let mut seen: u64 = 0;
        loop {
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
                let chunk = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let stops = string_stops(chunk);
                if stops != 0 {
                    let plain = stops.trailing_zeros() / 8;
                    seen |= chunk & ((1u64 << (plain * 8)) - 1);
                    self.pos += plain as usize;
                    break;
                }
                seen |= chunk;
                self.pos += 8;
            }
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    self.pos += 1;
                    self.escape()?;
                    escaped = true;
                }
                0..=0x1f => return None,
                b => {
                    seen |= u64::from(b);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        if seen & HIGH_BITS != 0 {
            std::str::from_utf8(&self.bytes[open..self.pos]).ok()?;
        }
        Some(escaped)
    }

    /// One escape, its backslash read. A `\u` surrogate must be a high one
    /// followed at once by a low one (serde_json's rule for strings).
    fn escape(&mut self) -> Option<()> {
        let b = self.peek()?;
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => match self.hex4()? {
                0xDC00..=0xDFFF => None,
                0xD800..=0xDBFF => {
                    self.eat(b'\\')?;
                    self.eat(b'u')?;
                    matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
                }
                _ => Some(()),
            },
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut n = 0u16;
        for &d in digits {
            n = n << 4 | char::from(d).to_digit(16)? as u16;
        }
        self.pos += 4;
        Some(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// What the scanner makes of a whole text: one value, then nothing.
    fn scans(text: &[u8]) -> bool {
        let mut s = Scanner::new(text);
        s.skip_value().and_then(|()| s.end()).is_some()
    }

    fn value_parses(text: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(text).is_ok()
    }

    #[track_caller]
    fn agrees(text: &[u8]) {
        assert_eq!(
            scans(text),
            value_parses(text),
            "scanner and serde_json::Value disagree on {:?}",
            String::from_utf8_lossy(text)
        );
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn takes_what_serde_json_takes() {
        for t in [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , -2.5e+3 , true , false , null , "x" , { } , [ ] ] } "#,
            r#""plain""#,
            r#""escapes \" \\ \/ \b \f \n \r \t \u0000 \u00e9 \uFFFF""#,
            r#""a pair \ud83d\ude00 and é, 😀""#,
            r#"0"#,
            r#"-0"#,
            r#"-0.0e-0"#,
            r#"1E5"#,
            r#"1e308"#,
            r#"1e-400"#,
            r#"0e99999999999999"#,
            r#"18446744073709551616"#,
            r#"-9223372036854775809"#,
            r#"{"a":{"b":{"c":[[[{"d":"e"}]]]}}}"#,
            r#"{"k":1,"k":2}"#,
        ] {
            assert!(scans(t.as_bytes()), "{t}");
            agrees(t.as_bytes());
        }
        agrees(nested(DEPTH_MAX as usize).as_bytes());
        agrees(format!("1{}", "0".repeat(400)).as_bytes());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for t in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "[1 2]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{,"a":1}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x1",
            "1e400",
            "-1e400",
            "1.8e308",
            "tru",
            "nul",
            "True",
            "\"unterminated",
            "\"bad escape \\x\"",
            "\"short \\u12\"",
            "\"not hex \\u12G4\"",
            "\"lone high \\ud800\"",
            "\"lone high then text \\ud800x\"",
            "\"high then other escape \\ud800\\n\"",
            "\"high then high \\ud800\\ud800\"",
            "\"lone low \\udc00\"",
            "\"tab\tinside\"",
            "\"newline\ninside\"",
            "\"nul\0inside\"",
        ] {
            assert!(!scans(t.as_bytes()), "{t:?}");
            agrees(t.as_bytes());
        }
        agrees(nested(DEPTH_MAX as usize + 1).as_bytes());
        agrees(format!("1{}", "0".repeat(309)).as_bytes());
        for bytes in [
            &b"\"\xff\""[..],
            b"\"\xc3\"",
            b"\"\xed\xa0\x80\"", // a surrogate, UTF-8 encoded
            b"\"\xe9t\xe9\"",    // Latin-1
            b"[\"ok\", \xc3\xa9]",
        ] {
            assert!(!scans(bytes), "{bytes:?}");
            agrees(bytes);
        }
    }

    #[test]
    fn the_depth_bound_is_serde_jsons() {
        let depth = DEPTH_MAX as usize;
        assert!(value_parses(nested(depth).as_bytes()));
        assert!(!value_parses(nested(depth + 1).as_bytes()));
        assert!(scans(nested(depth).as_bytes()));
        assert!(!scans(nested(depth + 1).as_bytes()));
        let objects = format!("{}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let objects = objects.replacen(r#"{"a":}"#, r#"{"a":1}"#, 1);
        agrees(objects.as_bytes());
        // Deep but not too deep, many times over: the stack of open
        // brackets unwinds correctly.
        let many = format!("[{}]", vec![nested(depth - 1); 50].join(","));
        assert!(scans(many.as_bytes()));
    }

    #[test]
    fn strings_of_every_length_around_the_eight_byte_steps() {
        for len in 0..40 {
            for stop in ["\"", "\\n\"", "\\u00e9\"", "é\"", "\t\"", "\\ud800\""] {
                let t = format!("\"{}{stop}", "a".repeat(len));
                agrees(t.as_bytes());
                let t = format!("[\"{}{stop},1]", "é".repeat(len));
                agrees(t.as_bytes());
            }
        }
    }

    /// Bits of JSON that mutations splice in: structure, the keys the
    /// publish frame reads, and the edges of strings and numbers.
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\t",
        "0",
        "-",
        "7",
        "1.5",
        "01",
        "-0",
        "1e400",
        "1e-400",
        "18446744073709551615",
        "18446744073709551616",
        "null",
        "true",
        "false",
        "\\ud800",
        "\\udc00",
        "\\ud83d\\ude00",
        "\\u00e9",
        "\\n",
        "é",
        "😀",
        "\u{1}",
        "\"type\"",
        "\"ts\"",
        "\"channel\"",
        "\"event_ts\"",
        "\"event\"",
        "\"id\"",
        "\"transient\"",
        "\"t\\u0079pe\"",
        "{\"a\":[1,{}]}",
        "\"x\"",
    ];

    /// `n` deterministic mutants of `seeds`: pieces inserted, bytes
    /// deleted or replaced (invalid UTF-8 included), cuts.
    pub(crate) fn mutants(seeds: &[&str], n: usize) -> Vec<Vec<u8>> {
        let mut rng = StdRng::seed_from_u64(0x7a5e_ed01);
        (0..n)
            .map(|_| {
                let mut t = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..=t.len());
                    match rng.random_range(0..10) {
                        0..=4 => {
                            let piece = PIECES[rng.random_range(0..PIECES.len())];
                            t.splice(at..at, piece.bytes());
                        }
                        5 | 6 => {
                            let end = (at + rng.random_range(1..4)).min(t.len());
                            t.drain(at..end);
                        }
                        7 | 8 if at < t.len() => t[at] = rng.random(),
                        _ => t.truncate(at),
                    }
                }
                t
            })
            .collect()
    }

    #[test]
    fn mutants_agree_with_serde_json() {
        let seeds = [
            r#"{"a":[1,-2.5e3,true,null,"x\n\u00e9",{"b":{}}],"c":"é"}"#,
            r#"[{"type":"message","text":"hello there"},0,"\ud83d\ude00"]"#,
            r#""a string that is long enough for a few eight-byte steps""#,
        ];
        let mut accepted = 0;
        for t in mutants(&seeds, 20_000) {
            agrees(&t);
            accepted += usize::from(scans(&t));
        }
        // The mutants reach both sides of the rules, not only refusals.
        assert!(accepted > 1_000, "{accepted}");
    }
}
