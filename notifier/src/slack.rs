//! The Slack receiver, through slack-morphism: `chat.postMessage` with a bot token
//! (resolved notifications answer the firing message in its thread), or an incoming
//! webhook. Messages are Block Kit: a header, the facts an engineer needs first, and one
//! section per alert.

use std::sync::Arc;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::DeliveryError;
use crate::config::{Global, SlackConfig, secret_from};
use crate::payload::WebhookMessage;
use crate::render;

type Connector = SlackClientHyperConnector<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

enum Target {
    Bot {
        token: SlackApiToken,
        channel: SlackChannelId,
    },
    Webhook(url::Url),
}

/// A configured Slack integration.
pub struct SlackReceiver {
    name: String,
    client: Arc<SlackClient<Connector>>,
    target: Target,
    config: SlackConfig,
    library: foresight_template::Template,
}

/// What a delivery left behind: the message's `ts`, to thread later messages of the
/// same group under it.
pub type ThreadTs = Option<String>;

impl SlackReceiver {
    /// Builds the client for `config` with `global`'s defaults; `tls` is the rustls
    /// client configuration (the system's roots).
    ///
    /// # Errors
    /// A message naming what is missing or unreadable.
    pub fn new(
        name: &str,
        config: &SlackConfig,
        global: &Global,
        tls: rustls::ClientConfig,
        library: &foresight_template::Template,
    ) -> Result<Self, String> {
        let token = secret_from(
            name,
            "app_token",
            config.app_token.as_ref(),
            config.app_token_file.as_deref(),
        )?
        .or_else(|| global.slack_app_token.clone());
        // The global file goes before the global URL.
        let webhook = match secret_from(
            name,
            "api_url",
            config.api_url.as_ref(),
            config.api_url_file.as_deref(),
        )? {
            Some(u) => Some(u),
            None => secret_from(
                name,
                "global.slack_api_url",
                None,
                global.slack_api_url_file.as_deref(),
            )?
            .or_else(|| global.slack_api_url.clone()),
        };
        let api_url = config
            .app_url
            .clone()
            .or_else(|| global.slack_app_url.clone())
            .unwrap_or_else(|| "https://slack.com/api/".to_string());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        let target = match (token, webhook) {
            (Some(token), _) if config.channel.is_some() => Target::Bot {
                token: SlackApiToken::new(token.expose().to_string().into()),
                channel: SlackChannelId::new(config.channel.clone().unwrap_or_default()),
            },
            (_, Some(url)) => Target::Webhook(
                url.expose()
                    .parse()
                    // The URL carries the webhook's token: not in the message.
                    .map_err(|e| format!("{name}: api_url is not a URL: {e}"))?,
            ),
            _ => return Err(format!("{name}: set api_url, or app_token and channel")),
        };
        Ok(SlackReceiver {
            name: name.to_string(),
            client: Arc::new(SlackClient::new(connector)),
            target,
            config: config.clone(),
            library: library.clone(),
        })
    }

    fn content(&self, msg: &WebhookMessage) -> SlackMessageContent {
        let title = render::title(msg);
        let mut blocks: Vec<SlackBlock> = vec![
            SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(
                self.config
                    .title
                    .as_deref()
                    .map_or_else(|| title.clone(), |t| render::expand(t, msg, &self.library)),
            ))
            .into(),
        ];
        let facts: Vec<String> = render::facts(msg)
            .into_iter()
            .map(|(k, v)| format!("*{k}:* {v}"))
            .collect();
        if !facts.is_empty() {
            blocks.push(
                SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
                    SlackBlockMarkDownText::new(facts.join("   ")),
                )])
                .into(),
            );
        }
        for a in msg.alerts.iter().take(20) {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
                        render::slack_alert(a),
                    )))
                    .into(),
            );
        }
        if msg.alerts.len() > 20 {
            blocks.push(
                SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
                    SlackBlockMarkDownText::new(format!(
                        "…and {} more alerts",
                        msg.alerts.len() - 20
                    )),
                )])
                .into(),
            );
        }
        SlackMessageContent::new()
            .with_text(
                self.config
                    .text
                    .as_deref()
                    .map_or(title, |t| render::expand(t, msg, &self.library)),
            )
            .with_blocks(blocks)
    }

    /// Sends `msg`; a resolved-only message goes in the thread of `thread` when given.
    /// Returns the new message's `ts` (bot tokens only).
    ///
    /// # Errors
    /// [`DeliveryError`]: Slack's rate limit and server errors are retryable.
    pub async fn send(
        &self,
        msg: &WebhookMessage,
        thread: Option<&str>,
    ) -> Result<ThreadTs, DeliveryError> {
        let content = self.content(msg);
        let fail = |e: SlackClientError| match &e {
            SlackClientError::RateLimitError(r) => {
                DeliveryError::http(&self.name, 429, e.to_string(), r.retry_after)
            }
            SlackClientError::ApiError(_) => {
                DeliveryError::http(&self.name, 400, e.to_string(), None)
            }
            SlackClientError::HttpError(h) if h.status_code.as_u16() < 500 => {
                DeliveryError::http(&self.name, h.status_code.as_u16(), e.to_string(), None)
            }
            _ => DeliveryError::Unreachable {
                receiver: self.name.clone(),
                message: e.to_string(),
            },
        };
        match &self.target {
            Target::Bot { token, channel } => {
                let session = self.client.open_session(token);
                let mut req = SlackApiChatPostMessageRequest::new(channel.clone(), content);
                req.username = self.config.username.clone();
                req.icon_url = self.config.icon_url.clone();
                req.icon_emoji = self.config.icon_emoji.clone();
                req.thread_ts = thread.map(|t| SlackTs::new(t.to_string()));
                let resp = session.chat_post_message(&req).await.map_err(fail)?;
                Ok(Some(resp.ts.to_string()))
            }
            Target::Webhook(url) => {
                self.client
                    .post_webhook_message(url, &SlackApiPostWebhookMessageRequest::new(content))
                    .await
                    .map_err(fail)?;
                Ok(None)
            }
        }
    }
}
