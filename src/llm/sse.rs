//! Server-sent events (`text/event-stream`), as the chat APIs stream answers: a body cut into
//! arbitrary network chunks goes in, whole events come out.

use super::CallError;

/// One event: its type (`event:` field, when given) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// The events of a streamed HTTP response, read as its body arrives.
pub struct SseStream {
    response: reqwest::Response,
    parser: SseParser,
    ended: bool,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            parser: SseParser::default(),
            ended: false,
        }
    }

    /// The events the body's next chunk completes; once the body has ended, an event the
    /// server did not close, then `None`.
    ///
    /// No deadline of its own: the response's client ([`super::http_client`]) bounds the whole
    /// call, body included, so a stream that drips forever ends here with a timeout error (and
    /// the model chain's own bound on each call is there for a client that would not).
    pub async fn next_events(&mut self) -> Result<Option<Vec<SseEvent>>, CallError> {
        if self.ended {
            return Ok(None);
        }
        let events = match self.response.chunk().await.map_err(CallError::from_transport)? {
            Some(bytes) => self.parser.feed(&bytes),
            None => {
                self.ended = true;
                self.parser.finish().into_iter().collect()
            }
        };
        Ok(Some(events))
    }
}

/// Incremental parser; feed it the body's chunks in order.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated (a chunk may end anywhere, even inside a UTF-8
    /// character).
    partial_line: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// The events completed by `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.partial_line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.partial_line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        self.partial_line.extend_from_slice(rest);
        events
    }

    /// The body ended: an event the server did not close with a blank line still counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.partial_line);
        if !line.is_empty() {
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                return Some(event);
            }
        }
        self.line("")
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry: not used by the chat APIs' clients
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_split_anywhere_are_put_back_together() {
        let body = "event: message_start\r\ndata: {\"a\":\"é\"}\r\n\r\n: keep-alive\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let whole = SseParser::default().feed(body.as_bytes());
        assert_eq!(data(&whole), ["{\"a\":\"é\"}", "one\ntwo", "[DONE]"]);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[1].event, None);
        // Every split point, including inside the two-byte `é`.
        for cut in 1..body.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&body.as_bytes()[..cut]);
            events.extend(parser.feed(&body.as_bytes()[cut..]));
            assert_eq!(events, whole, "split at byte {cut}");
        }
    }

    #[test]
    fn an_unterminated_last_event_still_counts() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: last").is_empty());
        assert_eq!(parser.finish().map(|e| e.data), Some("last".to_owned()));
        assert_eq!(parser.finish(), None);
    }
}
