//! The cluster's certificate authority and the certificates it signs for
//! each process (see `cairn_proto::tls` for how they are used).
//!
//! A CA directory holds `ca.pem` and `ca.key` (0600). Each process gets a
//! directory with `ca.pem`, its own `node.pem` and `node.key` (0600), named
//! for the process and for [`SERVER_NAME`], usable as server and as client.
//! `cairn up` keeps the CA under `cairn-data/tls/` and issues one directory
//! per member there (`tls/meta-1`, ..., `tls/admin` for the operator's
//! verbs); `cairn admin tls` does the same for other deployments.

use anyhow::Context;
use cairn_proto::tls::{CA_FILE, CERT_FILE, KEY_FILE, SERVER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The CA key, next to `ca.pem` in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The extra names a member's certificate was issued for.
const NAMES_FILE: &str = "names";
/// The directory `cairn admin` verbs take their client certificate from.
pub const ADMIN: &str = "admin";

/// The CA's parameters. Rebuilt the same way whenever the CA signs, so the
/// issuer name in every certificate matches the CA certificate's subject.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Cairn cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Writes `text` to `path`, readable by the owner only when `secret`.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    let mode = if secret { 0o600 } else { 0o644 };
    // A file left by an interrupted run may have other permissions: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A cluster CA on disk.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

impl Ca {
    /// The CA in `dir`, created there if it has none.
    pub fn ensure(dir: &Path) -> anyhow::Result<Ca> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
        if cert.exists() && key.exists() {
            let key_pem = std::fs::read_to_string(&key)?;
            return Ok(Ca {
                dir: dir.to_path_buf(),
                cert_pem: std::fs::read_to_string(&cert)?,
                key: KeyPair::from_pem(&key_pem)
                    .with_context(|| format!("reading the CA key {}", key.display()))?,
            });
        }
        let key_pair = KeyPair::generate()?;
        let ca = ca_params()?.self_signed(&key_pair)?;
        write_file(&key, &key_pair.serialize_pem(), true)?;
        write_file(&cert, &ca.pem(), false)?;
        Ok(Ca { dir: dir.to_path_buf(), cert_pem: ca.pem(), key: key_pair })
    }

    /// The TLS directory of process `name` (`<CA dir>/<name>`), issued if it
    /// does not exist yet. Returns its path.
    pub fn member(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.member_also_named(name, &[])
    }

    /// [`Ca::member`] whose certificate also names `hosts` (DNS names or IP
    /// addresses): for listeners that clients outside the cluster dial by
    /// address, such as the gateway's NBD door.
    pub fn member_also_named(&self, name: &str, hosts: &[String]) -> anyhow::Result<PathBuf> {
        self.member_in(&self.dir, name, hosts)
    }

    /// [`Ca::member_also_named`] with the member's directory under `out`.
    pub fn member_in(&self, out: &Path, name: &str, hosts: &[String]) -> anyhow::Result<PathBuf> {
        let dir = out.join(name);
        // The names a certificate was issued for: one issued for other hosts
        // (`cairn up --host` changed) is issued again.
        let names = hosts.join(",");
        let issued_for = std::fs::read_to_string(dir.join(NAMES_FILE)).unwrap_or_default();
        if dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists() && issued_for == names {
            return Ok(dir);
        }
        self.issue(name, hosts, &dir)?;
        write_file(&dir.join(NAMES_FILE), &names, false)?;
        Ok(dir)
    }

    /// Writes a certificate for `name` (and `hosts`), signed by this CA, into `out`.
    pub fn issue(&self, name: &str, hosts: &[String], out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out)?;
        let mut names = vec![SERVER_NAME.to_string(), name.to_string()];
        names.extend(hosts.iter().cloned());
        let mut p = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        write_file(&out.join(KEY_FILE), &key.serialize_pem(), true)?;
        write_file(&out.join(CERT_FILE), &cert.pem(), false)?;
        write_file(&out.join(CA_FILE), &self.cert_pem, false)?;
        Ok(())
    }

    /// A directory for qemu's `tls-creds-x509` object (`endpoint=client`):
    /// the CA as `ca-cert.pem`, so NBD clients can check the door.
    pub fn qemu_client_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("nbd-client");
        std::fs::create_dir_all(&dir)?;
        write_file(&dir.join("ca-cert.pem"), &self.cert_pem, false)?;
        Ok(dir)
    }
}

/// `cairn admin tls`: a CA and certificates for deployments `cairn up`
/// does not manage (deploy/ runs it once before the cluster starts).
#[derive(clap::Args, Debug)]
pub struct TlsArgs {
    /// Directory of the CA (`ca.pem`, `ca.key`); created with a new CA if empty.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where the processes' directories go (default: the CA directory). Keep
    /// them apart to give processes their files without the CA key.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Names (DNS or IP) every certificate issued now also carries, for
    /// clients outside the cluster that dial an address (the NBD door).
    #[arg(long, value_delimiter = ',')]
    also_named: Vec<String>,
    /// Issue a certificate for each of these process names, into `<out>/<name>`
    /// (existing ones are kept).
    names: Vec<String>,
}

pub fn run(args: TlsArgs) -> anyhow::Result<()> {
    let ca = Ca::ensure(&args.ca_dir)?;
    let out = args.out.as_deref().unwrap_or(&args.ca_dir);
    for name in &args.names {
        let dir = ca.member_in(out, name, &args.also_named)?;
        println!("{}", dir.display());
    }
    // qemu's tls-creds-x509 (endpoint=client) reads the CA as ca-cert.pem.
    let qemu = out.join("nbd-client");
    std::fs::create_dir_all(&qemu)?;
    write_file(&qemu.join("ca-cert.pem"), &ca.cert_pem, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::tls::ClusterTls;

    #[test]
    fn a_member_directory_loads_and_survives_a_second_ensure() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::ensure(dir.path()).unwrap();
        let m = ca.member("meta-1").unwrap();
        let tls = ClusterTls::load(&m).unwrap();
        assert!(tls.cert_pem().contains("BEGIN CERTIFICATE"));
        let mode = std::fs::metadata(m.join(KEY_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // The same CA again: its certificate and the member's stay as they were.
        let again = Ca::ensure(dir.path()).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
        again.member("meta-1").unwrap();
        assert_eq!(ClusterTls::load(&m).unwrap().cert_pem(), tls.cert_pem());
        // Other hosts to name: issued again.
        again.member_also_named("meta-1", &["10.0.0.7".to_string()]).unwrap();
        assert_ne!(ClusterTls::load(&m).unwrap().cert_pem(), tls.cert_pem());
    }
}
