//! A validating scan of a JSON object's top level that reads no nested value: it yields each
//! top-level key (decoded) and the byte span of its value. It accepts exactly what serde_json
//! accepts when it skips a value (`IgnoredAny`, which is what the former serde-based head parse
//! did with everything it did not read): the full grammar, no control character in strings,
//! valid escapes, no nesting limit, and no UTF-8 check inside skipped strings (the caller checks
//! the spans it reads). Strings, most of a body's bytes, are crossed with SIMD searches.
//!
//! Nothing is guessed: a body that is not JSON is refused here, so a `"model"` inside a string or
//! a nested value can never be taken for the top-level key a JSON parser upstream would read.

use std::borrow::Cow;

/// The body is not JSON (or not a JSON object).
#[derive(Debug)]
pub(super) struct Syntax;

/// The members of a top-level object, in order.
pub(super) struct Object<'a> {
    b: &'a [u8],
    i: usize,
    first: bool,
    /// open containers of the value being skipped
    stack: Vec<u8>,
}

impl<'a> Object<'a> {
    pub(super) fn new(b: &'a [u8]) -> Result<Self, Syntax> {
        let i = ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err(Syntax);
        }
        Ok(Object { b, i: i + 1, first: true, stack: Vec::with_capacity(32) })
    }

    /// The next key, or None at the object's end (after which only whitespace may follow).
    pub(super) fn next_key(&mut self) -> Result<Option<Cow<'a, str>>, Syntax> {
        let b = self.b;
        self.i = ws(b, self.i);
        match b.get(self.i) {
            Some(b'}') => {
                let end = ws(b, self.i + 1);
                return if end == b.len() { Ok(None) } else { Err(Syntax) };
            }
            Some(b',') if !self.first => self.i = ws(b, self.i + 1),
            Some(b'"') if self.first => {}
            _ => return Err(Syntax),
        }
        self.first = false;
        let start = self.i;
        let close;
        (self.i, close) = key_end(b, start)?;
        // the key's contents, validated as serde_json validates a key it reads (UTF-8, no lone
        // surrogate escape)
        let raw = &b[start + 1..close];
        let key = if raw.contains(&b'\\') {
            serde_json::from_slice::<String>(&b[start..=close]).map(Cow::Owned).map_err(|_| Syntax)?
        } else {
            std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|_| Syntax)?
        };
        Ok(Some(key))
    }

    /// The span `(start, end)` of the value of the key just read, validated and skipped.
    pub(super) fn value(&mut self) -> Result<(usize, usize), Syntax> {
        let start = ws(self.b, self.i);
        self.i = value_end(self.b, start, &mut self.stack)?;
        Ok((start, self.i))
    }
}

/// The span of the first element of the array at `b[at..]`, a value `Object::value` validated.
pub(super) fn first_element(b: &[u8], at: usize) -> Option<(usize, usize)> {
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let start = ws(b, at + 1);
    if b.get(start) == Some(&b']') {
        return None;
    }
    let end = value_end(b, start, &mut Vec::new()).ok()?;
    Some((start, end))
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Past a key at `b[i]` (its opening quote), the whitespace and the colon after it; and where
/// its closing quote is.
fn key_end(b: &[u8], i: usize) -> Result<(usize, usize), Syntax> {
    if b.get(i) != Some(&b'"') {
        return Err(Syntax);
    }
    let close = string_end(b, i + 1)? - 1;
    let i = ws(b, close + 1);
    if b.get(i) != Some(&b':') {
        return Err(Syntax);
    }
    Ok((i + 1, close))
}

/// Past the value starting at `b[i]`. Iterative (open containers on `stack`): no depth limit,
/// as serde_json's skip has none, and no recursion to overflow.
fn value_end(b: &[u8], mut i: usize, stack: &mut Vec<u8>) -> Result<usize, Syntax> {
    stack.clear();
    loop {
        i = ws(b, i);
        match b.get(i) {
            Some(b'"') => i = string_end(b, i + 1)?,
            Some(&open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                i = ws(b, i + 1);
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    stack.push(open);
                    if open == b'{' {
                        i = key_end(b, i)?.0;
                    }
                    continue;
                }
            }
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => i = number_end(b, i)?,
            _ => return Err(Syntax),
        }
        // a value ended: close containers until one goes on with another member
        loop {
            let Some(&open) = stack.last() else { return Ok(i) };
            i = ws(b, i);
            match (open, b.get(i)) {
                (_, Some(b',')) => {
                    i += 1;
                    if open == b'{' {
                        i = key_end(b, ws(b, i))?.0;
                    }
                    break;
                }
                (b'[', Some(b']')) | (b'{', Some(b'}')) => {
                    stack.pop();
                    i += 1;
                }
                _ => return Err(Syntax),
            }
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Syntax> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        Err(Syntax)
    }
}

/// Past a number (JSON's grammar: no leading zero, digits after `.` and after `e`).
fn number_end(b: &[u8], mut i: usize) -> Result<usize, Syntax> {
    let digits = |b: &[u8], i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i),
        _ => return Err(Syntax),
    }
    if b.get(i) == Some(&b'.') {
        let j = digits(b, i + 1);
        if j == i + 1 {
            return Err(Syntax);
        }
        i = j;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let j = digits(b, i);
        if j == i {
            return Err(Syntax);
        }
        i = j;
    }
    Ok(i)
}

/// Past the closing quote of the string whose contents start at `b[start]`: from escape to
/// escape with memchr's SIMD search, then one check for control characters (never raw in JSON;
/// an escape's bytes are printable) by a min reduction, which vectorizes.
fn string_end(b: &[u8], start: usize) -> Result<usize, Syntax> {
    let mut i = start;
    loop {
        i += memchr::memchr2(b'"', b'\\', &b[i..]).ok_or(Syntax)?;
        if b[i] == b'"' {
            break;
        }
        match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') if b.get(i + 2..i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i += 6,
            _ => return Err(Syntax),
        }
    }
    if b[start..i].iter().fold(0xff, |m: u8, &c| m.min(c)) < 0x20 {
        return Err(Syntax);
    }
    Ok(i + 1)
}
