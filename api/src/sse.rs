//! A minimal Server-Sent Events parser: enough for the relay's job event stream.

/// One event: its name (`message` when unnamed) and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field.
    pub name: String,
    /// The `data:` fields.
    pub data: String,
}

/// Turns chunks of a `text/event-stream` body into events, whatever the chunk borders.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: String,
}

impl Parser {
    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        if self.buffer.contains('\r') {
            self.buffer = self.buffer.replace("\r\n", "\n").replace('\r', "\n");
        }
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block) {
                events.push(event);
            }
        }
        events
    }
}

fn parse_block(block: &str) -> Option<Event> {
    let mut name = None;
    let mut data: Option<String> = None;
    for line in block.lines() {
        // Lines starting with ':' are comments (the relay's keep-alives).
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    // Per the spec, a block without data dispatches nothing.
    Some(Event {
        name: name.unwrap_or_else(|| "message".into()),
        data: data?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments_are_skipped() {
        let mut parser = Parser::default();
        assert!(parser.feed(b": keep-alive\n\nevent: prog").is_empty());
        let events =
            parser.feed(b"ress\ndata: {\"a\":1}\n\nevent: done\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            events,
            [
                Event {
                    name: "progress".into(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: "done".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }
}
