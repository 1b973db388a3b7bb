//! The EC2 Query API's answers as a small element tree: enough to read
//! `volumeSet/item/volumeId` and an `Errors/Error/Code`, with quick-xml
//! doing the parsing.

use anyhow::{bail, Context};
use quick_xml::events::Event;
use quick_xml::Reader;

/// One element: its local name, its text and its child elements.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The `item`s of the list child `set` (`volumeSet`, `tagSet`, ...).
    pub fn items<'a>(&'a self, set: &str) -> impl Iterator<Item = &'a Element> + 'a {
        self.child(set).into_iter().flat_map(|s| s.children.iter().filter(|c| c.name == "item"))
    }

    /// The value of the tag `key` in `tagSet`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.items("tagSet").find(|t| t.text("key") == Some(key)).and_then(|t| t.text("value"))
    }
}

/// Parses a whole document into its root element.
pub fn parse(doc: &str) -> anyhow::Result<Element> {
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        match reader.read_event().context("malformed XML answer")? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push(Element { name, ..Default::default() });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let el = Element { name, ..Default::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.unescape().context("malformed XML text")?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::End(_) => {
                let el = stack.pop().context("unbalanced XML answer")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Eof => bail!("the XML answer ended early"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_tags_and_errors() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <volumeSet>
    <item><volumeId>vol-1</volumeId><size>8</size>
      <tagSet><item><key>Name</key><value>a &amp; b</value></item></tagSet></item>
    <item><volumeId>vol-2</volumeId><tagSet/></item>
  </volumeSet>
</DescribeVolumesResponse>"#;
        let root = parse(doc).expect("parses");
        assert_eq!(root.name, "DescribeVolumesResponse");
        let ids: Vec<_> = root.items("volumeSet").filter_map(|v| v.text("volumeId")).collect();
        assert_eq!(ids, ["vol-1", "vol-2"]);
        let first = root.items("volumeSet").next().expect("one");
        assert_eq!(first.tag("Name"), Some("a & b"));
        assert_eq!(first.text("size"), Some("8"));
        let err = parse("<Response><Errors><Error><Code>X</Code></Error></Errors></Response>")
            .expect("parses");
        assert_eq!(
            err.child("Errors").and_then(|e| e.child("Error")).and_then(|e| e.text("Code")),
            Some("X")
        );
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
    }
}
