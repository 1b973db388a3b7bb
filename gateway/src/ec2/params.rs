//! Query parameters as boto3 sends them: flat `Name=value` pairs, lists as
//! `Name.1`, `Name.2`, structures joined with `.` (aws-wire.md §1.1), and the
//! parsers of the values every operation shares: volume and snapshot ids,
//! Outpost ARNs, tags.
//!
//! [`Params`] remembers which parameters an operation read, so that a
//! parameter the operation does not understand is refused
//! (`UnknownParameter`) instead of silently ignored.

use super::error::Ec2Error;
use crate::config::GatewayConfig;
use cairn_core::{OutpostId, SnapshotId, VolumeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// Parameters every request may carry besides its operation's own.
fn is_envelope(name: &str) -> bool {
    name == "Action"
        || name == "Version"
        || name.starts_with("X-Amz-")
        || name == "AWSAccessKeyId"
        || name == "Signature"
        || name == "SignatureMethod"
        || name == "SignatureVersion"
        || name == "Timestamp"
}

/// One `Filter.N`: a name and the values it matches (ORed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// At most this many tags per resource, as EC2 allows.
pub const MAX_TAGS: usize = 50;

#[derive(Debug)]
pub struct Params {
    map: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Params {
    /// Collects the pairs; a name given twice is refused rather than guessed at.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Ec2Error> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.contains_key(&k) {
                return Err(Ec2Error::InvalidParameterValue(format!(
                    "The parameter {k} is given more than once"
                )));
            }
            map.insert(k, v);
        }
        Ok(Params { map, used: RefCell::new(BTreeSet::new()) })
    }

    /// The value of `name`, marking it read.
    pub fn get(&self, name: &str) -> Option<&str> {
        let v = self.map.get(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Some(v.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, Ec2Error> {
        self.get(name).ok_or_else(|| Ec2Error::MissingParameter(name.to_string()))
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, Ec2Error> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    Ec2Error::InvalidParameterValue(format!(
                        "Invalid value '{v}' for {name}: expected a non-negative integer"
                    ))
                })
            })
            .transpose()
    }

    pub fn u32(&self, name: &str) -> Result<Option<u32>, Ec2Error> {
        match self.u64(name)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                Ec2Error::InvalidParameterValue(format!("Value {n} for {name} is too large"))
            }),
        }
    }

    /// `true` / `false`, as botocore sends booleans (case-insensitive here).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Ec2Error> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Ec2Error::InvalidParameterValue(format!(
                    "Invalid value '{v}' for {name}: expected true or false"
                ))),
            })
            .transpose()
    }

    /// The sorted, distinct indexes N of keys `prefix.N` and `prefix.N.*`.
    fn indexes(&self, prefix: &str) -> Vec<u32> {
        let head = format!("{prefix}.");
        let mut out: Vec<u32> = self
            .map
            .keys()
            .filter_map(|k| k.strip_prefix(&head))
            .filter_map(|rest| {
                let n = rest.split('.').next()?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                n.parse::<u32>().ok().filter(|n| *n >= 1)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A flattened list `prefix.1`, `prefix.2`, ..., in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.indexes(prefix)
            .into_iter()
            .filter_map(|i| self.get(&format!("{prefix}.{i}")).map(str::to_string))
            .collect()
    }

    /// `prefix.N.field` for every N.
    pub fn list_field(&self, prefix: &str, field: &str) -> Vec<String> {
        self.indexes(prefix)
            .into_iter()
            .filter_map(|i| self.get(&format!("{prefix}.{i}.{field}")).map(str::to_string))
            .collect()
    }

    /// `Filter.N.Name` with `Filter.N.Value.M`.
    pub fn filters(&self) -> Result<Vec<Filter>, Ec2Error> {
        let mut out = Vec::new();
        for i in self.indexes("Filter") {
            let name = self.required(&format!("Filter.{i}.Name"))?.to_string();
            let values = self.list(&format!("Filter.{i}.Value"));
            if values.is_empty() {
                return Err(Ec2Error::InvalidParameterValue(format!(
                    "The filter '{name}' must have at least one value"
                )));
            }
            out.push(Filter { name, values });
        }
        Ok(out)
    }

    /// `prefix.N.Key` [+ `prefix.N.Value`]; a missing value is `None`.
    pub fn tags(&self, prefix: &str) -> Result<Vec<(String, Option<String>)>, Ec2Error> {
        let mut out = Vec::new();
        for i in self.indexes(prefix) {
            let key = self.required(&format!("{prefix}.{i}.Key"))?.to_string();
            let value = self.get(&format!("{prefix}.{i}.Value")).map(str::to_string);
            out.push((key, value));
        }
        Ok(out)
    }

    /// `TagSpecification.N.ResourceType` + `TagSpecification.N.Tag.M.*`: the
    /// tags to put on the resource being created, which must be of `resource_type`.
    pub fn tag_specifications(
        &self,
        resource_type: &str,
    ) -> Result<BTreeMap<String, String>, Ec2Error> {
        let mut tags = BTreeMap::new();
        for i in self.indexes("TagSpecification") {
            let rt = self.required(&format!("TagSpecification.{i}.ResourceType"))?;
            if rt != resource_type {
                return Err(Ec2Error::InvalidParameterValue(format!(
                    "'{rt}' is not a valid taggable resource type for this operation."
                )));
            }
            let spec = self.tags(&format!("TagSpecification.{i}.Tag"))?;
            if spec.is_empty() {
                return Err(Ec2Error::InvalidParameterValue(
                    "Tag specification must have at least one tag".into(),
                ));
            }
            for (k, v) in spec {
                tags.insert(k, v.unwrap_or_default());
            }
        }
        let pairs: Vec<(String, String)> = tags.clone().into_iter().collect();
        check_tags(&pairs)?;
        Ok(tags)
    }

    /// `MaxResults` within `min..`; values above `max` are capped, as EC2
    /// documents (and aws-cli sends `MaxResults=1000` to DescribeVolumes).
    pub fn max_results(&self, min: usize, max: usize) -> Result<Option<usize>, Ec2Error> {
        match self.u64("MaxResults")? {
            None => Ok(None),
            Some(n) if (n as usize) < min => Err(Ec2Error::InvalidParameterValue(format!(
                "Value ( {n} ) for parameter maxResults is invalid. Expecting a value greater than {}.",
                min - 1
            ))),
            Some(n) => Ok(Some((n as usize).min(max))),
        }
    }

    /// `DryRun`, default false.
    pub fn dry_run(&self) -> Result<bool, Ec2Error> {
        Ok(self.bool("DryRun")?.unwrap_or(false))
    }

    /// Refuses any parameter the operation did not read.
    pub fn finish(&self) -> Result<(), Ec2Error> {
        let used = self.used.borrow();
        match self.map.keys().find(|k| !is_envelope(k) && !used.contains(*k)) {
            Some(k) => Err(Ec2Error::UnknownParameter(k.clone())),
            None => Ok(()),
        }
    }
}

pub fn volume_id(s: &str) -> Result<VolumeId, Ec2Error> {
    VolumeId::parse(s).ok_or_else(|| Ec2Error::VolumeIdMalformed(s.to_string()))
}

pub fn snapshot_id(s: &str) -> Result<SnapshotId, Ec2Error> {
    SnapshotId::parse(s).ok_or_else(|| Ec2Error::SnapshotIdMalformed(s.to_string()))
}

/// Resolves an Outpost ARN of this region and account.
pub fn outpost_from_arn(arn: &str, config: &GatewayConfig) -> Result<OutpostId, Ec2Error> {
    let op = OutpostId::from_arn(arn)
        .ok_or_else(|| Ec2Error::InvalidParameterValue(format!("Invalid Outpost ARN: {arn}")))?;
    if op.arn(&config.region, &config.account_id) != arn {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "The Outpost ARN {arn} is not in region {} of account {}.",
            config.region, config.account_id
        )));
    }
    Ok(op)
}

/// EC2's tag rules: keys 1..=127 characters, not starting with `aws:`,
/// values up to 256, at most [`MAX_TAGS`] per call.
pub fn check_tags(tags: &[(String, String)]) -> Result<(), Ec2Error> {
    if tags.len() > MAX_TAGS {
        return Err(Ec2Error::TagLimitExceeded(format!(
            "The maximum number of tags ({MAX_TAGS}) per resource has been exceeded"
        )));
    }
    for (k, v) in tags {
        check_tag_key(k)?;
        if v.chars().count() > 256 {
            return Err(Ec2Error::InvalidParameterValue(format!(
                "Tag value for key '{k}' exceeds the maximum length of 256 characters"
            )));
        }
    }
    Ok(())
}

pub fn check_tag_key(k: &str) -> Result<(), Ec2Error> {
    if k.is_empty() || k.chars().count() > 127 {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "Tag key '{k}' must be between 1 and 127 characters"
        )));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(Ec2Error::InvalidParameterValue(
            "Tag keys starting with 'aws:' are reserved for internal use".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> Params {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(s).unwrap();
        Params::from_pairs(pairs).unwrap()
    }

    #[test]
    fn lists_in_index_order() {
        let p = params("VolumeId.2=b&VolumeId.10=c&VolumeId.1=a&VolumeIdX=z");
        assert_eq!(p.list("VolumeId"), vec!["a", "b", "c"]);
        assert_eq!(p.finish(), Err(Ec2Error::UnknownParameter("VolumeIdX".into())));
        let p = params("VolumeId.0=a&VolumeId.x=b");
        assert!(p.list("VolumeId").is_empty());
        assert!(p.finish().is_err());
    }

    #[test]
    fn filters() {
        let p = params(
            "Filter.1.Name=tag:Name&Filter.1.Value.1=a&Filter.1.Value.2=b&Filter.2.Name=status&Filter.2.Value.1=available",
        );
        assert_eq!(
            p.filters().unwrap(),
            vec![
                Filter { name: "tag:Name".into(), values: vec!["a".into(), "b".into()] },
                Filter { name: "status".into(), values: vec!["available".into()] },
            ]
        );
        p.finish().unwrap();
        let p = params("Filter.1.Value.1=a");
        assert_eq!(p.filters(), Err(Ec2Error::MissingParameter("Filter.1.Name".into())));
        let p = params("Filter.1.Name=status");
        assert!(matches!(p.filters(), Err(Ec2Error::InvalidParameterValue(_))));
    }

    #[test]
    fn tags_and_specifications() {
        let p = params("Tag.1.Key=a&Tag.1.Value=&Tag.2.Key=b");
        assert_eq!(
            p.tags("Tag").unwrap(),
            vec![("a".into(), Some(String::new())), ("b".into(), None)]
        );
        let p = params(
            "TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v",
        );
        let t = p.tag_specifications("snapshot").unwrap();
        assert_eq!(t.get("k").map(String::as_str), Some("v"));
        p.finish().unwrap();
        let p = params("TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=k");
        assert!(matches!(
            p.tag_specifications("snapshot"),
            Err(Ec2Error::InvalidParameterValue(_))
        ));
        let p = params("TagSpecification.1.ResourceType=volume");
        assert!(matches!(p.tag_specifications("volume"), Err(Ec2Error::InvalidParameterValue(_))));
        let p = params("TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=aws:x");
        assert!(matches!(p.tag_specifications("volume"), Err(Ec2Error::InvalidParameterValue(_))));
    }

    #[test]
    fn scalars() {
        let p = params("Size=8&Bad=x&DryRun=TRUE&Flag=yes&Big=99999999999");
        assert_eq!(p.u64("Size").unwrap(), Some(8));
        assert!(matches!(p.u64("Bad"), Err(Ec2Error::InvalidParameterValue(_))));
        assert!(matches!(p.u32("Big"), Err(Ec2Error::InvalidParameterValue(_))));
        assert!(p.dry_run().unwrap());
        assert!(matches!(p.bool("Flag"), Err(Ec2Error::InvalidParameterValue(_))));
        assert_eq!(p.u64("Missing").unwrap(), None);
        assert_eq!(p.required("Missing"), Err(Ec2Error::MissingParameter("Missing".into())));
    }

    #[test]
    fn max_results_range() {
        assert_eq!(params("MaxResults=5").max_results(5, 500).unwrap(), Some(5));
        assert_eq!(params("MaxResults=1000").max_results(5, 500).unwrap(), Some(500));
        assert!(params("MaxResults=4").max_results(5, 500).is_err());
        assert_eq!(params("").max_results(5, 500).unwrap(), None);
    }

    #[test]
    fn outpost_arns() {
        let c = GatewayConfig::for_test(vec!["http://m:1".into()]);
        let op = OutpostId::parse("op-0123456789abcdef0").unwrap();
        assert_eq!(outpost_from_arn(&op.arn("cairn-1", "123456789012"), &c).unwrap(), op);
        assert!(outpost_from_arn(&op.arn("cairn-2", "123456789012"), &c).is_err());
        assert!(outpost_from_arn(&op.arn("cairn-1", "999999999999"), &c).is_err());
        assert!(outpost_from_arn("op-0123456789abcdef0", &c).is_err());
    }

    #[test]
    fn duplicates_and_envelope() {
        let pairs = vec![("A".to_string(), "1".to_string()), ("A".to_string(), "2".to_string())];
        assert!(Params::from_pairs(pairs).is_err());
        let p = params("Action=X&Version=2016-11-15&X-Amz-Date=1");
        p.finish().unwrap();
    }
}
