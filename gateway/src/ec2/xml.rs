//! EC2 XML answers: a small writer that escapes every text node, and the
//! renderers of the shared output structures (`Volume`, `Snapshot`, tag sets),
//! with the element names of botocore's ec2 model (aws-wire.md §1.5).
//!
//! Members without a value are omitted, never written empty: botocore parses
//! `<x/>` as `''`, not as absent.

use crate::config::GatewayConfig;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_core::records::{Snapshot, Volume};
use cairn_core::time::iso8601_ms;
use std::collections::BTreeMap;

pub const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Escapes text for an element body.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are replaced, not emitted.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// An XML document under construction.
#[derive(Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    pub fn open(&mut self, name: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// `<name>text</name>`, text escaped.
    pub fn leaf(&mut self, name: &str, text: impl AsRef<str>) -> &mut Self {
        self.open(name);
        self.out.push_str(&escape(text.as_ref()));
        self.close(name)
    }

    /// A leaf only when there is a value.
    pub fn opt_leaf<T: AsRef<str>>(&mut self, name: &str, text: Option<T>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(name, t);
        }
        self
    }

    /// `<name><item>..</item>..</name>`, one item per element of `items`.
    pub fn set<T>(&mut self, name: &str, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.open(name);
        for i in items {
            self.open("item");
            item(self, i);
            self.close("item");
        }
        self.close(name);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A success answer: `<{action}Response xmlns=..><requestId>..</requestId>{members}</..>`.
pub fn success_body(
    action: &str,
    request_id: &str,
    members: impl FnOnce(&mut XmlWriter),
) -> String {
    let mut w = XmlWriter::default();
    w.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    w.out.push_str(&format!("<{action}Response xmlns=\"{XMLNS}\">"));
    w.leaf("requestId", request_id);
    members(&mut w);
    w.close(&format!("{action}Response"));
    w.finish()
}

pub fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

/// `<tagSet>` only when there are tags (absent means "no tags" to botocore too).
pub fn tag_set(w: &mut XmlWriter, tags: &BTreeMap<String, String>) {
    if tags.is_empty() {
        return;
    }
    let items: Vec<(&String, &String)> = tags.iter().collect();
    w.set("tagSet", &items, |w, (k, v)| {
        w.leaf("key", k).leaf("value", v);
    });
}

/// What rendering needs besides the record itself.
pub struct RenderCtx<'a> {
    pub region: &'a str,
    pub account_id: &'a str,
    /// The AZ id of the volume's AZ, when the AZ is configured.
    pub az_id: Option<String>,
}

impl<'a> RenderCtx<'a> {
    /// Rendering for a resource in availability zone `az` (empty: none).
    pub fn new(config: &'a GatewayConfig, az: &str) -> Self {
        RenderCtx {
            region: &config.region,
            account_id: &config.account_id,
            az_id: config.az_id(az),
        }
    }
}

/// The children of a `Volume` (CreateVolume root, `volumeSet/item`).
pub fn volume_members(w: &mut XmlWriter, v: &Volume, cx: &RenderCtx<'_>) {
    w.leaf("volumeId", v.id.as_str())
        .leaf("size", v.size_gib.to_string())
        .opt_leaf("snapshotId", v.snapshot_id.as_ref().map(|s| s.as_str()))
        .leaf("availabilityZone", &v.az)
        .opt_leaf("availabilityZoneId", cx.az_id.as_deref())
        .leaf("status", v.state.as_str())
        .leaf("createTime", iso8601_ms(v.create_time_ms))
        .leaf("volumeType", &v.volume_type)
        .opt_leaf("iops", v.iops.map(|i| i.to_string()))
        .opt_leaf("throughput", v.throughput.map(|t| t.to_string()))
        .leaf("encrypted", v.encrypted.to_string())
        .leaf("multiAttachEnabled", "false")
        .opt_leaf("outpostArn", v.outpost.as_ref().map(|o| o.arn(cx.region, cx.account_id)));
    tag_set(w, &v.tags);
}

/// `attachmentSet` is not part of a CreateVolume answer, but DescribeVolumes
/// always has it; volumes are never attached to instances here.
pub fn described_volume(w: &mut XmlWriter, v: &Volume, cx: &RenderCtx<'_>) {
    volume_members(w, v, cx);
    w.open("attachmentSet").close("attachmentSet");
    w.leaf("fastRestored", "false");
}

/// The children of a `Snapshot` (CreateSnapshot root, `snapshotSet/item`).
pub fn snapshot_members(w: &mut XmlWriter, s: &Snapshot, cx: &RenderCtx<'_>) {
    w.leaf("snapshotId", s.id.as_str())
        .leaf("volumeId", s.volume_id.as_str())
        .leaf("status", s.state.as_str())
        .opt_leaf("statusMessage", s.state_message.as_deref())
        .leaf("startTime", iso8601_ms(s.start_time_ms))
        .opt_leaf("completionTime", s.completion_time_ms.map(iso8601_ms))
        .leaf("progress", format!("{}%", s.progress))
        .leaf("ownerId", &s.owner)
        .leaf("volumeSize", s.volume_size_gib.to_string())
        .leaf("description", &s.description)
        .leaf("encrypted", s.encrypted.to_string())
        .leaf("storageTier", &s.storage_tier)
        .opt_leaf("outpostArn", s.outpost.as_ref().map(|o| o.arn(cx.region, cx.account_id)))
        .opt_leaf("fullSnapshotSizeInBytes", s.full_size_bytes.map(|b| b.to_string()));
    tag_set(w, &s.tags);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{snapshot, volume};
    use cairn_core::records::SnapshotState;
    use cairn_core::OutpostId;

    /// Checks well-formedness and returns the element names in document order.
    fn element_names(xml: &str) -> Vec<String> {
        let mut r = quick_xml::Reader::from_str(xml);
        let mut names = Vec::new();
        let mut depth = 0i32;
        loop {
            match r.read_event() {
                Ok(quick_xml::events::Event::Start(e)) => {
                    depth += 1;
                    names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Empty(e)) => {
                    names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
                }
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well formed: {e}\n{xml}"),
            }
        }
        assert_eq!(depth, 0, "unbalanced: {xml}");
        names
    }

    fn cx() -> RenderCtx<'static> {
        RenderCtx {
            region: "cairn-1",
            account_id: "123456789012",
            az_id: Some("cairn-1-az1".into()),
        }
    }

    #[test]
    fn volume_without_tags_has_no_tag_set() {
        let body = success_body("CreateVolume", "r-1", |w| volume_members(w, &volume(), &cx()));
        let names = element_names(&body);
        assert_eq!(
            names,
            [
                "CreateVolumeResponse",
                "requestId",
                "volumeId",
                "size",
                "availabilityZone",
                "availabilityZoneId",
                "status",
                "createTime",
                "volumeType",
                "iops",
                "throughput",
                "encrypted",
                "multiAttachEnabled"
            ]
        );
        assert!(body.contains("<createTime>2026-01-01T00:00:00.123Z</createTime>"));
        assert!(body.contains(&format!("<CreateVolumeResponse xmlns=\"{XMLNS}\">")));
    }

    #[test]
    fn snapshot_with_tags_and_outpost() {
        let mut s = snapshot();
        s.tags.insert("Name".into(), "a&b".into());
        s.outpost = Some(OutpostId::parse("op-0123456789abcdef0").unwrap());
        s.state = SnapshotState::Error;
        s.state_message = Some("boom".into());
        let body = success_body("DescribeSnapshots", "r", |w| {
            w.set("snapshotSet", std::slice::from_ref(&s), |w, s| snapshot_members(w, s, &cx()));
        });
        let names = element_names(&body);
        for n in ["snapshotSet", "item", "statusMessage", "outpostArn", "tagSet", "key", "value"] {
            assert!(names.iter().any(|x| x == n), "{n} missing in {body}");
        }
        assert!(!names.iter().any(|x| x == "completionTime"));
        assert!(body.contains("<progress>0%</progress>"));
        assert!(body.contains("<description>d &lt;&amp;&gt;</description>"));
        assert!(body.contains(
            "<outpostArn>arn:aws:outposts:cairn-1:123456789012:outpost/op-0123456789abcdef0</outpostArn>"
        ));
        assert!(body.contains("<value>a&amp;b</value>"));
    }

    #[test]
    fn escape_control_characters() {
        assert_eq!(escape("a\u{1}b\tc"), "a\u{FFFD}b\tc");
    }
}
