//! Reading Server-Sent Events (`GET /messages/stream`) incrementally: bytes in, events
//! out, no I/O. Lines end with LF, CRLF or CR; a blank line ends an event; `data:`
//! lines join with newlines; `id:` sets the event's id; a line starting with `:` is a
//! comment (a keep-alive). What the chorus stream does not send (`event:`, `retry:`)
//! is read and ignored, as an `EventSource` would.

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// An event: its `id:` (if any) and its data lines joined with `\n`.
    Event { id: Option<String>, data: String },
    /// A comment line, as a keep-alive sends.
    Comment,
}

/// An incremental parser: [`SseParser::feed`] bytes as they arrive, in pieces of any
/// size (a piece may end in the middle of a line or of a UTF-8 character).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    data: Vec<String>,
    /// The last byte fed was a CR: a LF right after it ends the same line.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `bytes`; returns the events and comments they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.buf);
                    self.line(&line, &mut out);
                }
                _ => self.buf.push(b),
            }
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                out.push(SseItem::Event {
                    id: self.id.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.id = None;
            return;
        }
        if line[0] == b':' {
            out.push(SseItem::Comment);
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, data: &str) -> SseItem {
        SseItem::Event {
            id: Some(id.into()),
            data: data.into(),
        }
    }

    #[test]
    fn events_comments_and_line_endings() {
        let text = "retry: 1000\n\nid: 1\ndata: {\"id\":1}\n\n: keep-alive\n\nid:2\r\ndata: a\r\ndata: b\r\n\r\nid: 3\rdata: x\r\r";
        let mut p = SseParser::new();
        let all = p.feed(text.as_bytes());
        assert_eq!(
            all,
            vec![
                ev("1", "{\"id\":1}"),
                SseItem::Comment,
                ev("2", "a\nb"),
                ev("3", "x"),
            ]
        );
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_events() {
        let text =
            "id: 7\ndata: {\"message\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n: c\n\nid: 8\ndata: z\n\n";
        let whole = SseParser::new().feed(text.as_bytes());
        assert_eq!(whole.len(), 3);
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&bytes[..cut]);
            got.extend(p.feed(&bytes[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
        // One byte at a time too.
        let mut p = SseParser::new();
        let got: Vec<_> = bytes.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn an_unfinished_event_is_not_given_out() {
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 1\ndata: half").is_empty());
        assert_eq!(p.feed(b"\n\n"), vec![ev("1", "half")]);
    }
}
