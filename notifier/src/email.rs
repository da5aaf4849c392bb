//! The email receiver: one multipart (text and HTML) email per group notification, over
//! SMTP with STARTTLS (port 587, required by default), implicit TLS (port 465) or, when
//! `require_tls: false`, plain, with optional authentication (lettre).

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::DeliveryError;
use crate::config::{EmailConfig, Global, secret_from};
use crate::payload::WebhookMessage;
use crate::render;

/// A configured email integration.
pub struct EmailReceiver {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    config: EmailConfig,
    library: foresight_template::Template,
}

impl EmailReceiver {
    /// Builds the SMTP transport for `config` with `global`'s defaults.
    ///
    /// # Errors
    /// A message naming the bad address, host or CA file.
    pub fn new(
        name: &str,
        config: &EmailConfig,
        global: &Global,
        library: &foresight_template::Template,
    ) -> Result<Self, String> {
        let smarthost = config
            .smarthost
            .clone()
            .or_else(|| global.smtp_smarthost.clone())
            .ok_or_else(|| format!("{name}: no smarthost"))?;
        let (host, port) = smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{name}: smarthost {smarthost:?} is not host:port"))?;
        let from_text = config
            .from
            .clone()
            .or_else(|| global.smtp_from.clone())
            .ok_or_else(|| format!("{name}: no from address"))?;
        let from: Mailbox = from_text
            .parse()
            .map_err(|e| format!("{name}: from {from_text:?}: {e}"))?;
        let to = config
            .to
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<Mailbox>()
                    .map_err(|e| format!("{name}: to {a:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut tls = TlsParameters::builder(
            config
                .tls_config
                .server_name
                .clone()
                .unwrap_or_else(|| host.clone()),
        )
        .dangerous_accept_invalid_certs(config.tls_config.insecure_skip_verify);
        if let Some(ca) = &config.tls_config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{name}: ca_file {ca}: {e}"))?;
            tls = tls.add_root_certificate(
                Certificate::from_pem(&pem).map_err(|e| format!("{name}: ca_file {ca}: {e}"))?,
            );
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| format!("{name}: TLS: {e}"))?;
        let require_tls = config
            .require_tls
            .or(global.smtp_require_tls)
            .unwrap_or(true);
        let mode = if port == 465 {
            Tls::Wrapper(tls)
        } else if require_tls {
            Tls::Required(tls)
        } else {
            Tls::Opportunistic(tls)
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(mode)
            .timeout(Some(std::time::Duration::from_secs(30)));
        let password = secret_from(
            name,
            "auth_password",
            config.auth_password.as_ref(),
            config.auth_password_file.as_deref(),
        )?
        .or(secret_from(
            name,
            "global.smtp_auth_password",
            global.smtp_auth_password.as_ref(),
            global.smtp_auth_password_file.as_deref(),
        )?);
        let user = config
            .auth_username
            .clone()
            .or_else(|| global.smtp_auth_username.clone());
        if let (Some(user), Some(password)) = (user, password) {
            builder = builder.credentials(Credentials::new(user, password.expose().to_string()));
        }
        Ok(EmailReceiver {
            name: name.to_string(),
            transport: builder.build(),
            from,
            to,
            config: config.clone(),
            library: library.clone(),
        })
    }

    /// Sends the email for `msg`.
    ///
    /// # Errors
    /// [`DeliveryError`]: a refused or unreachable server is retryable; a permanent SMTP
    /// rejection (5xx) is not.
    pub async fn send(&self, msg: &WebhookMessage) -> Result<(), DeliveryError> {
        let subject = self.config.headers.get("Subject").map_or_else(
            || render::title(msg),
            |t| render::expand(t, msg, &self.library),
        );
        // Plain-text overrides only: templated ones are refused when the config loads.
        let text = self
            .config
            .text
            .clone()
            .unwrap_or_else(|| render::text(msg));
        let html = self
            .config
            .html
            .clone()
            .unwrap_or_else(|| render::html(msg));
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(None);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| DeliveryError::http(&self.name, 400, e.to_string(), None))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            // A permanent SMTP answer (5xx) will not change on a retry.
            Err(e) if e.is_permanent() => Err(DeliveryError::Status {
                receiver: self.name.clone(),
                status: 550,
                body: e.to_string(),
                retry_after: None,
                retryable: false,
            }),
            Err(e) => Err(DeliveryError::Unreachable {
                receiver: self.name.clone(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_password_file_is_read() {
        let config = crate::NotifyConfig::from_yaml(
            "global: {smtp_smarthost: 'localhost:25', smtp_from: a@example.com, smtp_auth_username: a, smtp_auth_password_file: /nonexistent/smtp-password}\nroute: {receiver: m}\nreceivers:\n  - name: m\n    email_configs: [{to: b@example.com}]\n",
        )
        .unwrap();
        let e = EmailReceiver::new(
            "m",
            &config.receivers["m"].email_configs[0],
            &config.global,
            &config.library,
        )
        .err()
        .expect("an unreadable password file is an error");
        assert!(
            e.contains("global.smtp_auth_password_file /nonexistent/smtp-password"),
            "{e}"
        );
    }
}
