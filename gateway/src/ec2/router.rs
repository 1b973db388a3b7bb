//! The pure router: query parameters in, a typed request out. Everything a
//! request can get wrong without looking at records is found here (missing or
//! malformed parameters, unknown ones, bad ranges), so a DryRun answers
//! `DryRunOperation` only for a request that would have been attempted.

use super::error::Ec2Error;
use super::ops::{copy, modify, sharing, snapshots, tags, tiers, volumes};
use super::params::{snapshot_id, volume_id, Params};
use crate::config::GatewayConfig;
use cairn_core::{SnapshotId, VolumeId};

/// One EC2 operation with its parsed input.
#[derive(Clone, Debug, PartialEq)]
pub enum Ec2Request {
    CreateVolume(volumes::CreateVolumeInput),
    DescribeVolumes(volumes::DescribeVolumesInput),
    DeleteVolume(VolumeId),
    CreateSnapshot(snapshots::CreateSnapshotInput),
    DescribeSnapshots(snapshots::DescribeSnapshotsInput),
    DeleteSnapshot(SnapshotId),
    CreateTags(tags::CreateTagsInput),
    DeleteTags(tags::DeleteTagsInput),
    DescribeTags(tags::DescribeTagsInput),
    ModifyVolume(modify::ModifyVolumeInput),
    DescribeVolumesModifications(modify::DescribeModificationsInput),
    ModifySnapshotAttribute(sharing::ModifyAttributeInput),
    DescribeSnapshotAttribute(sharing::DescribeAttributeInput),
    ResetSnapshotAttribute(SnapshotId),
    CopySnapshot(copy::CopySnapshotInput),
    ModifySnapshotTier(SnapshotId),
    RestoreSnapshotTier(tiers::RestoreInput),
    DescribeSnapshotTierStatus(tiers::DescribeTierInput),
}

impl Ec2Request {
    /// The `Action` name, which also names the response root element.
    pub fn action(&self) -> &'static str {
        match self {
            Ec2Request::CreateVolume(_) => "CreateVolume",
            Ec2Request::DescribeVolumes(_) => "DescribeVolumes",
            Ec2Request::DeleteVolume(_) => "DeleteVolume",
            Ec2Request::CreateSnapshot(_) => "CreateSnapshot",
            Ec2Request::DescribeSnapshots(_) => "DescribeSnapshots",
            Ec2Request::DeleteSnapshot(_) => "DeleteSnapshot",
            Ec2Request::CreateTags(_) => "CreateTags",
            Ec2Request::DeleteTags(_) => "DeleteTags",
            Ec2Request::DescribeTags(_) => "DescribeTags",
            Ec2Request::ModifyVolume(_) => "ModifyVolume",
            Ec2Request::DescribeVolumesModifications(_) => "DescribeVolumesModifications",
            Ec2Request::ModifySnapshotAttribute(_) => "ModifySnapshotAttribute",
            Ec2Request::DescribeSnapshotAttribute(_) => "DescribeSnapshotAttribute",
            Ec2Request::ResetSnapshotAttribute(_) => "ResetSnapshotAttribute",
            Ec2Request::CopySnapshot(_) => "CopySnapshot",
            Ec2Request::ModifySnapshotTier(_) => "ModifySnapshotTier",
            Ec2Request::RestoreSnapshotTier(_) => "RestoreSnapshotTier",
            Ec2Request::DescribeSnapshotTierStatus(_) => "DescribeSnapshotTierStatus",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Routed {
    pub request: Ec2Request,
    pub dry_run: bool,
}

/// EC2 actions of Cairn's scope (DESIGN.md) that this gateway does not serve
/// yet, and actions on instances it never will: answered `UnsupportedOperation`
/// rather than `InvalidAction`, so a caller can tell the difference.
const UNSUPPORTED: &[&str] = &[
    "DescribeVolumeStatus",
    "DescribeVolumeAttribute",
    "ModifyVolumeAttribute",
    "AttachVolume",
    "DetachVolume",
    "EnableVolumeIO",
    "CreateSnapshots",
    "LockSnapshot",
    "UnlockSnapshot",
    "DescribeLockedSnapshots",
    "EnableFastSnapshotRestores",
    "DisableFastSnapshotRestores",
    "DescribeFastSnapshotRestores",
];

pub fn route(p: &Params, config: &GatewayConfig) -> Result<Routed, Ec2Error> {
    let action = p.get("Action").filter(|a| !a.is_empty()).ok_or(Ec2Error::MissingAction)?;
    // botocore always sends 2016-11-15; the shapes served are that version's.
    let _version = p.get("Version");
    let request = match action {
        "CreateVolume" => Ec2Request::CreateVolume(volumes::parse_create(p, config)?),
        "DescribeVolumes" => Ec2Request::DescribeVolumes(volumes::parse_describe(p)?),
        "DeleteVolume" => Ec2Request::DeleteVolume(volume_id(p.required("VolumeId")?)?),
        "CreateSnapshot" => Ec2Request::CreateSnapshot(snapshots::parse_create(p, config)?),
        "DescribeSnapshots" => Ec2Request::DescribeSnapshots(snapshots::parse_describe(p)?),
        "DeleteSnapshot" => Ec2Request::DeleteSnapshot(snapshot_id(p.required("SnapshotId")?)?),
        "CreateTags" => Ec2Request::CreateTags(tags::parse_create(p)?),
        "DeleteTags" => Ec2Request::DeleteTags(tags::parse_delete(p)?),
        "DescribeTags" => Ec2Request::DescribeTags(tags::parse_describe(p)?),
        "ModifyVolume" => Ec2Request::ModifyVolume(modify::parse_modify(p)?),
        "DescribeVolumesModifications" => {
            Ec2Request::DescribeVolumesModifications(modify::parse_describe(p)?)
        }
        "ModifySnapshotAttribute" => Ec2Request::ModifySnapshotAttribute(sharing::parse_modify(p)?),
        "DescribeSnapshotAttribute" => {
            Ec2Request::DescribeSnapshotAttribute(sharing::parse_describe(p)?)
        }
        "ResetSnapshotAttribute" => Ec2Request::ResetSnapshotAttribute(sharing::parse_reset(p)?),
        "CopySnapshot" => Ec2Request::CopySnapshot(copy::parse_copy(p, config)?),
        "ModifySnapshotTier" => Ec2Request::ModifySnapshotTier(tiers::parse_modify(p)?),
        "RestoreSnapshotTier" => Ec2Request::RestoreSnapshotTier(tiers::parse_restore(p)?),
        "DescribeSnapshotTierStatus" => {
            Ec2Request::DescribeSnapshotTierStatus(tiers::parse_describe(p)?)
        }
        a if UNSUPPORTED.contains(&a) => return Err(Ec2Error::UnsupportedOperation(a.to_string())),
        a => return Err(Ec2Error::InvalidAction(a.to_string())),
    };
    let dry_run = p.dry_run()?;
    p.finish()?;
    Ok(Routed { request, dry_run })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::params::Filter;
    use crate::http::error::AwsError;

    fn config() -> GatewayConfig {
        GatewayConfig::for_test(vec!["http://m:1".into()])
    }

    fn route_str(body: &str) -> Result<Routed, Ec2Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
        route(&Params::from_pairs(pairs).unwrap(), &config())
    }

    const V: &str = "vol-0123456789abcdef0";
    const S: &str = "snap-0123456789abcdef0";

    #[test]
    fn actions_and_codes() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("Version=2016-11-15", Err("MissingAction")),
            ("Action=&Version=2016-11-15", Err("MissingAction")),
            ("Action=RunInstances", Err("InvalidAction")),
            ("Action=CopySnapshot&SourceSnapshotId=x", Err("InvalidSnapshotID.Malformed")),
            ("Action=CopySnapshot&SourceSnapshotId=snap-0123456789abcdef0", Err("MissingParameter")),
            (
                "Action=CopySnapshot&SourceSnapshotId=snap-0123456789abcdef0&SourceRegion=cairn-1",
                Ok("CopySnapshot"),
            ),
            (
                "Action=CopySnapshot&SourceSnapshotId=snap-0123456789abcdef0&SourceRegion=us-west-2",
                Err("InvalidParameterValue"),
            ),
            (
                "Action=CopySnapshot&SourceSnapshotId=snap-0123456789abcdef0&SourceRegion=cairn-1&CompletionDurationMinutes=0",
                Err("InvalidParameterValue"),
            ),
            ("Action=EnableFastSnapshotRestores&SourceSnapshotId.1=x", Err("UnsupportedOperation")),
            ("Action=DescribeVolumes&Version=2016-11-15", Ok("DescribeVolumes")),
            ("Action=DescribeVolumes&Bogus=1", Err("UnknownParameter")),
            ("Action=DeleteVolume", Err("MissingParameter")),
            ("Action=DeleteVolume&VolumeId=vol-xyz", Err("InvalidVolumeID.Malformed")),
            ("Action=DeleteVolume&VolumeId=vol-0123456789abcdef0", Ok("DeleteVolume")),
            ("Action=DeleteSnapshot&SnapshotId=snap-1", Err("InvalidSnapshotID.Malformed")),
            ("Action=DeleteSnapshot&SnapshotId=snap-0123456789abcdef0", Ok("DeleteSnapshot")),
            ("Action=DescribeVolumes&DryRun=maybe", Err("InvalidParameterValue")),
            ("Action=DescribeVolumes&MaxResults=4", Err("InvalidParameterValue")),
            ("Action=DescribeVolumes&MaxResults=x", Err("InvalidParameterValue")),
            (
                "Action=DescribeVolumes&MaxResults=5&VolumeId.1=vol-0123456789abcdef0",
                Err("InvalidParameterCombination"),
            ),
            (
                "Action=DescribeVolumes&Filter.1.Name=colour&Filter.1.Value.1=x",
                Err("InvalidParameterValue"),
            ),
            ("Action=DescribeSnapshots&MaxResults=1000&Owner.1=self", Ok("DescribeSnapshots")),
            (
                "Action=DescribeSnapshots&MaxResults=5&SnapshotId.1=snap-0123456789abcdef0",
                Err("InvalidParameterCombination"),
            ),
            ("Action=CreateTags&Tag.1.Key=a", Err("MissingParameter")),
            ("Action=DeleteTags&Tag.1.Key=a", Err("MissingParameter")),
            ("Action=CreateTags&ResourceId.1=ami-1&Tag.1.Key=a", Err("InvalidID")),
            (
                "Action=CreateTags&ResourceId.1=vol-0123456789abcdef0&Tag.1.Key=aws:x",
                Err("InvalidParameterValue"),
            ),
            (
                "Action=DescribeTags&Filter.1.Name=resource-type&Filter.1.Value.1=volume",
                Ok("DescribeTags"),
            ),
            ("Action=DescribeTags&NextToken=!!", Err("InvalidParameterValue")),
            ("Action=DescribeVolumes&NextToken=%25%25%25", Err("InvalidParameterValue")),
            ("%ff%fe=%00&&&==", Err("MissingAction")),
        ];
        for (body, want) in table {
            let got = route_str(body).map(|r| r.request.action()).map_err(|e| e.code());
            assert_eq!(got, *want, "{body}");
        }
    }

    #[test]
    fn dry_run_is_seen_after_parsing() {
        let r = route_str(&format!("Action=DeleteVolume&VolumeId={V}&DryRun=true")).unwrap();
        assert!(r.dry_run);
        // A bad parameter wins over DryRun.
        let e = route_str("Action=DeleteVolume&VolumeId=bad&DryRun=true").unwrap_err();
        assert_eq!(e.code(), "InvalidVolumeID.Malformed");
    }

    #[test]
    fn create_volume_parameters() {
        let ok = |body: &str| match route_str(body) {
            Ok(Routed { request: Ec2Request::CreateVolume(i), .. }) => i,
            other => panic!("{body}: {other:?}"),
        };
        let i = ok("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8");
        assert_eq!(
            (i.az.as_str(), i.size_gib, i.volume_type.as_str()),
            ("cairn-1a", Some(8), "gp2")
        );
        let i = ok("Action=CreateVolume&AvailabilityZoneId=cairn-1-az2&Size=8&VolumeType=gp3&Iops=4000&Throughput=250&ClientToken=t&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=x");
        assert_eq!(i.az, "cairn-1b");
        assert_eq!((i.iops, i.throughput), (Some(4000), Some(250)));
        assert_eq!(i.client_token.as_deref(), Some("t"));
        assert_eq!(i.tags.get("Name").map(String::as_str), Some("x"));
        let i = ok(&format!("Action=CreateVolume&AvailabilityZone=cairn-1a&SnapshotId={S}"));
        assert_eq!(i.size_gib, None);

        let errs: &[(&str, &str)] = &[
            ("Action=CreateVolume&Size=8", "MissingParameter"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a", "MissingParameter"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1z&Size=8", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&AvailabilityZoneId=cairn-1-az1&Size=8", "InvalidParameterCombination"),
            ("Action=CreateVolume&AvailabilityZoneId=use1-az1&Size=8", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=0", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=16385", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=65537&VolumeType=gp3", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=100&VolumeType=st1", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&VolumeType=gp9", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&VolumeType=io1", "MissingParameter"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&VolumeType=io1&Iops=1000", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&Iops=1000", "InvalidParameterCombination"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&VolumeType=gp3&Throughput=100", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&Throughput=200", "InvalidParameterCombination"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&Encrypted=true", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&KmsKeyId=k", "InvalidParameterDependency"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&MultiAttachEnabled=true", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&OutpostArn=arn:aws:ec2:x", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&OutpostArn=arn:aws:outposts:us-east-1:123456789012:outpost/op-0123456789abcdef0", "InvalidParameterValue"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&SnapshotId=snap-x", "InvalidSnapshotID.Malformed"),
            ("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Key=k", "InvalidParameterValue"),
        ];
        for (body, code) in errs {
            assert_eq!(route_str(body).unwrap_err().code(), *code, "{body}");
        }
        // Encrypted=false and MultiAttachEnabled=false are what we do anyway.
        ok("Action=CreateVolume&AvailabilityZone=cairn-1a&Size=8&Encrypted=false&MultiAttachEnabled=false");
    }

    #[test]
    fn create_snapshot_parameters() {
        let r = route_str(&format!(
            "Action=CreateSnapshot&VolumeId={V}&Description=d&TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v&DryRun=true"
        ))
        .unwrap();
        assert!(r.dry_run);
        let Ec2Request::CreateSnapshot(i) = r.request else { panic!() };
        assert_eq!(i.description, "d");
        assert_eq!(i.tags.get("k").map(String::as_str), Some("v"));
        assert_eq!(route_str("Action=CreateSnapshot").unwrap_err().code(), "MissingParameter");
        let long = "x".repeat(256);
        assert_eq!(
            route_str(&format!("Action=CreateSnapshot&VolumeId={V}&Description={long}"))
                .unwrap_err()
                .code(),
            "InvalidParameterValue"
        );
        assert_eq!(
            route_str(&format!("Action=CreateSnapshot&VolumeId={V}&Location=local"))
                .unwrap_err()
                .code(),
            "InvalidParameterValue"
        );
        route_str(&format!("Action=CreateSnapshot&VolumeId={V}&Location=regional")).unwrap();
    }

    #[test]
    fn describe_snapshots_parameters() {
        let r = route_str(
            "Action=DescribeSnapshots&Owner.1=self&RestorableBy.1=123456789012&Filter.1.Name=tag:Name&Filter.1.Value.1=a&Filter.1.Value.2=b&MaxResults=5",
        )
        .unwrap();
        let Ec2Request::DescribeSnapshots(i) = r.request else { panic!() };
        assert_eq!(i.owners, vec!["self"]);
        assert_eq!(i.restorable_by, vec!["123456789012"]);
        assert_eq!(
            i.filters,
            vec![Filter { name: "tag:Name".into(), values: vec!["a".into(), "b".into()] }]
        );
        assert_eq!(i.max_results, Some(5));
        let r = route_str("Action=DescribeSnapshots&MaxResults=5000").unwrap();
        let Ec2Request::DescribeSnapshots(i) = r.request else { panic!() };
        assert_eq!(i.max_results, Some(1000));
    }

    #[test]
    fn tag_parameters() {
        let r = route_str(&format!(
            "Action=CreateTags&ResourceId.1={V}&ResourceId.2={S}&Tag.1.Key=a&Tag.1.Value=&Tag.2.Key=b"
        ))
        .unwrap();
        let Ec2Request::CreateTags(i) = r.request else { panic!() };
        assert_eq!(i.resources, vec![V.to_string(), S.to_string()]);
        assert_eq!(
            i.tags,
            vec![("a".to_string(), String::new()), ("b".to_string(), String::new())]
        );
        let r = route_str(&format!(
            "Action=DeleteTags&ResourceId.1={V}&Tag.1.Key=a&Tag.2.Key=b&Tag.2.Value="
        ))
        .unwrap();
        let Ec2Request::DeleteTags(i) = r.request else { panic!() };
        assert_eq!(i.tags, vec![("a".to_string(), None), ("b".to_string(), Some(String::new()))]);
        let e = route_str("Action=DeleteTags&Tag.1.Key=a").unwrap_err();
        assert_eq!(e.to_string(), "The request must contain the parameter resourceIdSet");
    }
}
