//! Just enough mail reading for series: split an mbox (or read a maildir), unfold and decode
//! headers (RFC 2047 `=?utf-8?q?...?=` / `?b?`), and find a message by its Message-ID.

use std::path::Path;

/// One message's headers (name lower-cased, value unfolded and decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits mbox text on its `From ` separator lines and reads each message's headers.
pub fn read_messages(mbox: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in mbox.split_inclusive('\n') {
        if line.starts_with("From ") {
            if let Some(m) = current.take() {
                out.push(parse_headers(&m));
            }
            current = Some(String::new());
        } else if let Some(m) = current.as_mut() {
            m.push_str(line);
        } else {
            // A single message without a separator line.
            current = Some(line.to_owned());
        }
    }
    if let Some(m) = current {
        out.push(parse_headers(&m));
    }
    out
}

fn parse_headers(text: &str) -> Message {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    for (_, v) in &mut headers {
        *v = decode_words(v);
    }
    Message { headers }
}

/// The `Subject:` of each message, in order, skipping messages without one.
pub fn subjects(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m.header("subject").map(str::to_owned))
        .collect()
}

/// Drops `Re:` prefixes.
pub fn strip_reply(subject: &str) -> String {
    let mut s = subject.trim();
    while let Some(r) = s.strip_prefix("Re:").or_else(|| s.strip_prefix("RE:")) {
        s = r.trim_start();
    }
    s.to_owned()
}

/// The subject of the message with `msgid` in an mbox file or a maildir.
pub fn find_subject(path: &Path, msgid: &str) -> Option<String> {
    let texts: Vec<String> = if path.is_dir() {
        ["cur", "new"]
            .iter()
            .filter_map(|d| fs_err::read_dir(path.join(d)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| fs_err::read_to_string(e.path()).ok())
            .collect()
    } else {
        vec![fs_err::read_to_string(path).ok()?]
    };
    let want = format!("<{msgid}>");
    texts
        .iter()
        .flat_map(|t| read_messages(t))
        .find(|m| m.header("message-id").is_some_and(|id| id.trim() == want))
        .and_then(|m| m.header("subject").map(str::to_owned))
}

/// Decodes RFC 2047 encoded words (`=?charset?Q?...?=`, `=?charset?B?...?=`); UTF-8 and
/// ASCII charsets are decoded, others are left as they are.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, after) = rest.split_at(start);
        let Some(decoded) = decode_one(after) else {
            out.push_str(before);
            out.push_str("=?");
            rest = &after[2..];
            last_was_word = false;
            continue;
        };
        // White space between two encoded words is dropped (RFC 2047, section 6.2).
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&decoded.0);
        rest = &after[decoded.1..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

fn decode_one(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let (charset, rest) = body.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    let consumed = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let cs = charset.to_ascii_lowercase();
    if !(cs == "utf-8" || cs == "us-ascii" || cs == "utf8") {
        return None;
    }
    let bytes = match encoding {
        "Q" | "q" => {
            let mut decoded = Vec::new();
            let raw = text.as_bytes();
            let mut at = 0;
            while at < raw.len() {
                match raw[at] {
                    b'_' => decoded.push(b' '),
                    b'=' if at + 2 < raw.len() => {
                        let hex = std::str::from_utf8(raw.get(at + 1..at + 3)?).ok()?;
                        decoded.push(u8::from_str_radix(hex, 16).ok()?);
                        at += 2;
                    }
                    byte => decoded.push(byte),
                }
                at += 1;
            }
            decoded
        }
        "B" | "b" => base64(text)?,
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_split_and_headers() {
        let mbox = "From abc Mon Sep 17 00:00:00 2001\nFrom: A <a@x>\nSubject: [PATCH v2 0/2]\n iomap: folded\nMessage-Id: <c@x>\n\nbody\nFrom def Mon Sep 17 00:00:00 2001\nSubject: [PATCH v2 1/2] one\nMessage-Id: <p1@x>\n\n>From quoted\n";
        let m = read_messages(mbox);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].header("subject"), Some("[PATCH v2 0/2] iomap: folded"));
        assert_eq!(m[1].header("message-id"), Some("<p1@x>"));
        assert_eq!(
            subjects(&m),
            vec!["[PATCH v2 0/2] iomap: folded", "[PATCH v2 1/2] one"]
        );
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words("=?UTF-8?q?Gr=C3=B6=C3=9Fe_fix?="), "Größe fix");
        assert_eq!(
            decode_words("[PATCH] =?utf-8?b?w5xiZXI=?= alles"),
            "[PATCH] Über alles"
        );
        assert_eq!(decode_words("=?utf-8?q?a?= =?utf-8?q?b?="), "ab");
        assert_eq!(decode_words("plain =? not encoded"), "plain =? not encoded");
    }
}
