//! Optional LDAP bind backend: a customer without a local password hash is authenticated by
//! binding to the directory as the DN built from a template (`uid={},ou=people,dc=...`), with
//! the user name DN-escaped. The customer record itself still lives in our database.

use ldap3::{LdapConnAsync, LdapConnSettings};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LdapBackend {
    pub url: String,
    /// The bind DN with `{}` where the escaped user name goes.
    pub dn_template: String,
}

impl LdapBackend {
    pub fn new(url: String, dn_template: String) -> Result<Self, String> {
        if dn_template.matches("{}").count() != 1 {
            return Err("the LDAP DN template must contain exactly one {}".into());
        }
        Ok(LdapBackend { url, dn_template })
    }

    /// `Ok(true)` when the directory accepted the password, `Ok(false)` when it refused it,
    /// `Err` when it could not be asked.
    pub async fn bind(&self, username: &str, password: &str) -> Result<bool, ldap3::LdapError> {
        // An empty password is an unauthenticated bind, which directories accept: never try it.
        if password.is_empty() {
            return Ok(false);
        }
        let dn = self.dn_template.replace("{}", &ldap3::dn_escape(username));
        let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url).await?;
        ldap3::drive!(conn);
        let result = ldap.with_timeout(Duration::from_secs(5)).simple_bind(&dn, password).await?;
        // 49 = invalidCredentials; any other non-zero code is also a refusal.
        let accepted = result.rc == 0;
        let _ = ldap.unbind().await;
        Ok(accepted)
    }
}
