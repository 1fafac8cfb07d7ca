//! Test PKI of a fake Talos node: an Ed25519 CA, the apid server certificate, role client certificates, talosconfig files.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SanType,
};

/// A Talos role, carried as the client certificate's Organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `os:admin`: everything.
    Admin,
    /// `os:operator`: reads, reboots.
    Operator,
    /// `os:reader`: reads that are not sensitive.
    Reader,
}

impl Role {
    /// The Organization string Talos puts in the certificate.
    pub fn organization(self) -> &'static str {
        match self {
            Role::Admin => "os:admin",
            Role::Operator => "os:operator",
            Role::Reader => "os:reader",
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    /// PKCS#8 under the usual `PRIVATE KEY` label.
    pub key_pem: String,
}

impl CertifiedKey {
    /// The key as Talos writes it into a talosconfig: label `ED25519 PRIVATE KEY`, PKCS#8 body.
    pub fn talos_key_pem(&self) -> String {
        self.key_pem
            .replace("BEGIN PRIVATE KEY", "BEGIN ED25519 PRIVATE KEY")
            .replace("END PRIVATE KEY", "END ED25519 PRIVATE KEY")
    }
}

/// The CA of a fake cluster and what it signed.
pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// apid's certificate with IP SAN 127.0.0.1.
    pub server: CertifiedKey,
}

fn ed25519_key() -> anyhow::Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ED25519).context("generating an Ed25519 key")
}

impl Pki {
    /// A fresh Ed25519 CA and a server certificate for 127.0.0.1.
    pub fn generate() -> anyhow::Result<Pki> {
        let ca_key = ed25519_key()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "talos");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let server_key = ed25519_key()?;
        let mut server_params = CertificateParams::new(Vec::<String>::new())?;
        server_params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
        server_params
            .distinguished_name
            .push(DnType::CommonName, "fake-node");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            server: CertifiedKey {
                cert_pem: server_cert.pem(),
                key_pem: server_key.serialize_pem(),
            },
            ca_params,
            ca_key,
        })
    }

    /// A client certificate whose Organization is the role, signed by this CA.
    pub fn client(&self, role: Role) -> anyhow::Result<CertifiedKey> {
        self.client_with_organizations(&[role.organization()])
    }

    /// A client certificate with any Organizations (none, several, unknown roles).
    pub fn client_with_organizations(
        &self,
        organizations: &[&str],
    ) -> anyhow::Result<CertifiedKey> {
        let key = ed25519_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for organization in organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *organization);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes a talosconfig (context `fake`, endpoint `127.0.0.1:PORT`, node `127.0.0.1`) for a role.
    pub fn write_talosconfig(
        &self,
        dir: &Path,
        apid: SocketAddr,
        role: Role,
    ) -> anyhow::Result<PathBuf> {
        let client = self.client(role)?;
        let path = dir.join(format!(
            "talosconfig-{}",
            role.organization().replace(':', "-")
        ));
        std::fs::write(&path, talosconfig_text(&self.ca_pem, &client, apid))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// A talosconfig in Talos's own format, with base64 PEMs.
pub fn talosconfig_text(ca_pem: &str, client: &CertifiedKey, apid: SocketAddr) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!(
        "context: fake\n\
         contexts:\n  \
           fake:\n    \
             endpoints:\n      - {endpoint}\n    \
             nodes:\n      - {node}\n    \
             ca: {ca}\n    \
             crt: {crt}\n    \
             key: {key}\n",
        endpoint = apid,
        node = apid.ip(),
        ca = b64(ca_pem),
        crt = b64(&client.cert_pem),
        key = b64(&client.talos_key_pem()),
    )
}

/// The Organizations in a DER certificate's subject (Talos reads roles from them).
pub fn organizations(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organization()
        .filter_map(|attribute| attribute.as_str().ok().map(str::to_owned))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn client_certificates_carry_their_role_as_organization() {
        let pki = Pki::generate().unwrap();
        for role in [Role::Admin, Role::Reader] {
            let client = pki.client(role).unwrap();
            let der = rustls::pki_types::CertificateDer::from_pem_slice(client.cert_pem.as_bytes())
                .unwrap();
            assert_eq!(organizations(&der), vec![role.organization().to_owned()]);
        }
    }

    #[test]
    fn talos_key_label_wraps_a_pkcs8_body() {
        let pki = Pki::generate().unwrap();
        let client = pki.client(Role::Admin).unwrap();
        let talos = client.talos_key_pem();
        assert!(talos.starts_with("-----BEGIN ED25519 PRIVATE KEY-----\n"));
        assert!(
            talos
                .trim_end()
                .ends_with("-----END ED25519 PRIVATE KEY-----")
        );
        // Same body as the PKCS#8 PEM: only the label differs.
        let body =
            |pem: &str| -> String { pem.lines().filter(|l| !l.starts_with("-----")).collect() };
        assert_eq!(body(&talos), body(&client.key_pem));
    }

    #[test]
    fn talosconfig_holds_base64_pems_and_loopback_endpoint() {
        let pki = Pki::generate().unwrap();
        let client = pki.client(Role::Admin).unwrap();
        let text = talosconfig_text(&pki.ca_pem, &client, "127.0.0.1:50123".parse().unwrap());
        assert!(text.starts_with("context: fake\n"));
        assert!(text.contains("      - 127.0.0.1:50123\n"));
        assert!(text.contains("nodes:\n      - 127.0.0.1\n"));
        let key_b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("key: "))
            .unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_b64)
            .unwrap();
        assert!(
            String::from_utf8(key)
                .unwrap()
                .contains("ED25519 PRIVATE KEY")
        );
    }
}
