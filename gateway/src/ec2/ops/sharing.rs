//! ModifySnapshotAttribute, DescribeSnapshotAttribute and
//! ResetSnapshotAttribute: sharing a snapshot (`createVolumePermission`)
//! with other accounts or with everyone. Only the owner may read or change
//! it; to a grantee these answer `UnauthorizedOperation`, to anyone else the
//! snapshot does not exist.

use crate::ctx::Ctx;
use crate::ec2::error::Ec2Error;
use crate::ec2::params::{snapshot_id, Params};
use crate::ec2::records;
use crate::ec2::xml::success_body;
use crate::http::auth::Caller;
use cairn_core::command::{Command, SharingChange};
use cairn_core::SnapshotId;
use std::sync::Arc;

/// At most this many permissions change in one call, as EC2 allows.
pub const MAX_CHANGES: usize = 500;

#[derive(Clone, Debug, PartialEq)]
pub struct ModifyAttributeInput {
    pub snapshot_id: SnapshotId,
    pub change: SharingChange,
}

/// The attributes DescribeSnapshotAttribute reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    CreateVolumePermission,
    /// Marketplace product codes: Cairn has none, so always empty.
    ProductCodes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DescribeAttributeInput {
    pub snapshot_id: SnapshotId,
    pub attribute: Attribute,
}

fn attribute(p: &Params, required: bool) -> Result<Option<Attribute>, Ec2Error> {
    match p.get("Attribute") {
        None if required => Err(Ec2Error::MissingParameter("Attribute".into())),
        None => Ok(None),
        Some("createVolumePermission") => Ok(Some(Attribute::CreateVolumePermission)),
        Some("productCodes") => Ok(Some(Attribute::ProductCodes)),
        Some(other) => Err(Ec2Error::InvalidParameterValue(format!(
            "Value ({other}) for parameter attribute is invalid. Expected: 'createVolumePermission' or 'productCodes'."
        ))),
    }
}

/// One side (add or remove) of a change: account ids and whether the group
/// `all` is named.
#[derive(Default)]
struct Side {
    user_ids: Vec<String>,
    public: bool,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.user_ids.is_empty() && !self.public
    }

    fn user(&mut self, id: String) -> Result<(), Ec2Error> {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Ec2Error::UserIdMalformed(id));
        }
        self.user_ids.push(id);
        Ok(())
    }

    fn group(&mut self, g: String) -> Result<(), Ec2Error> {
        if g != "all" {
            return Err(Ec2Error::InvalidAttributeItemValue(format!(
                "Invalid attribute item value \"{g}\" for createVolumePermission item type: only the group 'all' exists."
            )));
        }
        self.public = true;
        Ok(())
    }

    /// `CreateVolumePermission.{Add|Remove}.N.{UserId|Group}`.
    fn structured(&mut self, p: &Params, prefix: &str) -> Result<(), Ec2Error> {
        for u in p.list_field(prefix, "UserId") {
            self.user(u)?;
        }
        for g in p.list_field(prefix, "Group") {
            self.group(g)?;
        }
        Ok(())
    }
}

/// Reads both forms EC2 accepts: `OperationType` with `UserId.N` /
/// `UserGroup.N`, and the structured `CreateVolumePermission.Add|Remove`.
/// Adding and removing in one call is refused, as EC2 refuses it.
pub fn parse_modify(p: &Params) -> Result<ModifyAttributeInput, Ec2Error> {
    let snapshot_id = snapshot_id(p.required("SnapshotId")?)?;
    if attribute(p, false)? == Some(Attribute::ProductCodes) {
        return Err(Ec2Error::InvalidParameterValue(
            "The attribute productCodes of a snapshot cannot be modified.".into(),
        ));
    }
    let (mut add, mut remove) = (Side::default(), Side::default());
    let mut flat = Side::default();
    for u in p.list("UserId") {
        flat.user(u)?;
    }
    for g in p.list("UserGroup") {
        flat.group(g)?;
    }
    match p.get("OperationType") {
        Some("add") => add = flat,
        Some("remove") => remove = flat,
        Some(other) => {
            return Err(Ec2Error::InvalidParameterValue(format!(
            "Value ({other}) for parameter operationType is invalid. Expected: 'add' or 'remove'."
        )))
        }
        None if !flat.is_empty() => {
            return Err(Ec2Error::MissingParameter("OperationType".into()));
        }
        None => {}
    }
    add.structured(p, "CreateVolumePermission.Add")?;
    remove.structured(p, "CreateVolumePermission.Remove")?;
    let change = match (add.is_empty(), remove.is_empty()) {
        (true, true) => {
            return Err(Ec2Error::MissingParameter(
                "CreateVolumePermission (or OperationType with UserId or UserGroup)".into(),
            ))
        }
        (false, false) => {
            return Err(Ec2Error::InvalidParameterCombination(
                "A single call cannot both add and remove create volume permissions.".into(),
            ))
        }
        (false, true) => SharingChange::Add { user_ids: add.user_ids, public: add.public },
        (true, false) => SharingChange::Remove { user_ids: remove.user_ids, public: remove.public },
    };
    let count = match &change {
        SharingChange::Add { user_ids, public } | SharingChange::Remove { user_ids, public } => {
            user_ids.len() + usize::from(*public)
        }
        SharingChange::Reset => 0,
    };
    if count > MAX_CHANGES {
        return Err(Ec2Error::InvalidParameterValue(format!(
            "At most {MAX_CHANGES} create volume permissions can change in one call; this one has {count}."
        )));
    }
    Ok(ModifyAttributeInput { snapshot_id, change })
}

pub fn parse_describe(p: &Params) -> Result<DescribeAttributeInput, Ec2Error> {
    let snapshot_id = snapshot_id(p.required("SnapshotId")?)?;
    let attribute = attribute(p, true)?.unwrap_or(Attribute::CreateVolumePermission);
    Ok(DescribeAttributeInput { snapshot_id, attribute })
}

/// ResetSnapshotAttribute: only `createVolumePermission` can be reset.
pub fn parse_reset(p: &Params) -> Result<SnapshotId, Ec2Error> {
    let id = snapshot_id(p.required("SnapshotId")?)?;
    match attribute(p, true)? {
        Some(Attribute::CreateVolumePermission) => Ok(id),
        _ => Err(Ec2Error::InvalidParameterValue(
            "Only the attribute createVolumePermission of a snapshot can be reset.".into(),
        )),
    }
}

async fn change(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: SnapshotId,
    change: SharingChange,
) -> Result<(), Ec2Error> {
    records::own_snapshot(ctx, caller, &id).await?;
    let cmd = Command::ShareSnapshot { id, owner: caller.account_id.clone(), change };
    records::write(ctx, &cmd).await?;
    Ok(())
}

pub async fn modify(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: ModifyAttributeInput,
) -> Result<String, Ec2Error> {
    change(ctx, caller, input.snapshot_id, input.change).await?;
    Ok(success_body("ModifySnapshotAttribute", rid, |w| {
        w.leaf("return", "true");
    }))
}

pub async fn reset(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    id: SnapshotId,
) -> Result<String, Ec2Error> {
    change(ctx, caller, id, SharingChange::Reset).await?;
    Ok(success_body("ResetSnapshotAttribute", rid, |w| {
        w.leaf("return", "true");
    }))
}

pub async fn describe(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    rid: &str,
    input: DescribeAttributeInput,
) -> Result<String, Ec2Error> {
    let id = input.snapshot_id;
    records::own_snapshot(ctx, caller, &id).await?;
    let sharing = ctx.sharing(&id).await?;
    Ok(success_body("DescribeSnapshotAttribute", rid, |w| {
        w.leaf("snapshotId", id.as_str());
        match input.attribute {
            Attribute::CreateVolumePermission => {
                // Accounts first, then the group, as EC2 lists them.
                let mut items: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = &sharing {
                    items.extend(s.user_ids.iter().map(|u| ("userId", u.as_str())));
                    if s.public {
                        items.push(("group", "all"));
                    }
                }
                w.set("createVolumePermission", &items, |w, (name, value)| {
                    w.leaf(name, value);
                });
            }
            Attribute::ProductCodes => w.set::<()>("productCodes", &[], |_, _| {}),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::AwsError;

    const S: &str = "snap-0123456789abcdef0";

    fn params(body: &str) -> Params {
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
        pairs.push(("SnapshotId".into(), S.into()));
        Params::from_pairs(pairs).unwrap()
    }

    fn modify(body: &str) -> Result<SharingChange, &'static str> {
        parse_modify(&params(body)).map(|i| i.change).map_err(|e| e.code())
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_forms_of_a_change() {
        let a = "111122223333";
        assert_eq!(
            modify(&format!(
                "Attribute=createVolumePermission&OperationType=add&UserId.1={a}&UserGroup.1=all"
            )),
            Ok(SharingChange::Add { user_ids: ids(&[a]), public: true })
        );
        assert_eq!(
            modify(&format!("OperationType=remove&UserId.1={a}")),
            Ok(SharingChange::Remove { user_ids: ids(&[a]), public: false })
        );
        assert_eq!(
            modify(&format!(
                "CreateVolumePermission.Add.1.UserId={a}&CreateVolumePermission.Add.2.Group=all"
            )),
            Ok(SharingChange::Add { user_ids: ids(&[a]), public: true })
        );
        assert_eq!(
            modify("CreateVolumePermission.Remove.1.Group=all"),
            Ok(SharingChange::Remove { user_ids: vec![], public: true })
        );
    }

    #[test]
    fn bad_changes_get_ec2_codes() {
        let table = [
            ("", "MissingParameter"),
            ("UserId.1=111122223333", "MissingParameter"),
            ("OperationType=grant&UserId.1=111122223333", "InvalidParameterValue"),
            ("OperationType=add&UserId.1=12345", "InvalidUserID.Malformed"),
            ("OperationType=add&UserId.1=abcdefghijkl", "InvalidUserID.Malformed"),
            ("OperationType=add&UserGroup.1=everyone", "InvalidAMIAttributeItemValue"),
            ("CreateVolumePermission.Add.1.Group=admins", "InvalidAMIAttributeItemValue"),
            (
                "CreateVolumePermission.Add.1.UserId=111122223333&CreateVolumePermission.Remove.1.Group=all",
                "InvalidParameterCombination",
            ),
            ("Attribute=productCodes&OperationType=add&UserGroup.1=all", "InvalidParameterValue"),
            ("Attribute=kernel&OperationType=add&UserGroup.1=all", "InvalidParameterValue"),
        ];
        for (body, code) in table {
            assert_eq!(modify(body).unwrap_err(), code, "{body}");
        }
        let many: String = (1..=501).map(|i| format!("&UserId.{i}={:012}", i)).collect::<String>();
        assert_eq!(
            modify(&format!("OperationType=add{many}")).unwrap_err(),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn describe_and_reset_need_an_attribute() {
        let d = |b: &str| parse_describe(&params(b)).map(|i| i.attribute).map_err(|e| e.code());
        assert_eq!(d("Attribute=createVolumePermission"), Ok(Attribute::CreateVolumePermission));
        assert_eq!(d("Attribute=productCodes"), Ok(Attribute::ProductCodes));
        assert_eq!(d(""), Err("MissingParameter"));
        assert_eq!(d("Attribute=ramdisk"), Err("InvalidParameterValue"));
        let r = |b: &str| parse_reset(&params(b)).map_err(|e| e.code());
        assert!(r("Attribute=createVolumePermission").is_ok());
        assert_eq!(r("Attribute=productCodes"), Err("InvalidParameterValue"));
        assert_eq!(r(""), Err("MissingParameter"));
    }
}
