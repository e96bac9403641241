//! The trip explorer page (`GET /`): three static files compiled into the binary (no CDN, works
//! offline) and the page's settings. The page has no privileges of its own: it asks the API with
//! the key the user enters, like any other client.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// What the page serves: its settings, the deployment's regions and the page's policy, made
/// once.
#[derive(Clone, Debug)]
pub(crate) struct UiState {
    config: UiConfig,
    /// GeoJSON of the regions.
    regions_geojson: Bytes,
    /// The Content-Security-Policy of the page's files.
    policy: Option<HeaderValue>,
}

impl UiState {
    /// The page with `config`'s settings over the regions of `regions_geojson` (none: an empty
    /// collection).
    pub(crate) fn new(config: UiConfig, regions_geojson: String) -> Self {
        let images =
            config.tile_url.as_deref().and_then(tile_origin).map_or(String::new(), |origin| format!(" {origin}"));
        let policy = format!(
            "default-src 'self'; img-src 'self' data:{images}; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        );
        let regions_geojson = if regions_geojson.is_empty() {
            Bytes::from_static(br#"{"type":"FeatureCollection","features":[]}"#)
        } else {
            Bytes::from(regions_geojson)
        };
        UiState { config, regions_geojson, policy: HeaderValue::from_str(&policy).ok() }
    }
}

impl Default for UiState {
    fn default() -> Self {
        UiState::new(UiConfig::default(), String::new())
    }
}

/// The page's settings (`[ui]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Raster tiles under the map, as an XYZ URL template (`https://tiles.example/{z}/{x}/{y}.png`);
    /// none: the track on a plain background (works offline).
    pub tile_url: Option<String>,
    /// Shown on the map with the tiles (most tile servers require it).
    pub tile_attribution: Option<String>,
}

impl UiConfig {
    /// Checks the tile URL: `http` or `https`, with `{z}`, `{x}` and `{y}`.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.tile_url else { return Ok(()) };
        if tile_origin(url).is_none() {
            return Err(format!("tile_url {url:?} must start with http:// or https:// and name a host"));
        }
        if let Some(missing) = ["{z}", "{x}", "{y}"].into_iter().find(|part| !url.contains(part)) {
            return Err(format!("tile_url {url:?} must contain {missing}"));
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of a tile URL template.
fn tile_origin(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    let valid = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    valid.then(|| &url[..url.len() - rest.len() + host_end])
}

/// A page file with the headers every one of them carries: what scripts, styles and images may
/// load (this origin only, and the tile server), no framing, no sniffing, and revalidation so
/// that an upgrade shows at once.
fn page_file(content_type: &'static str, body: &'static str, ui: &UiState) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(policy) = &ui.policy {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy.clone());
    }
    response
}

/// `GET /`.
pub(crate) fn index(ui: &UiState) -> Response {
    page_file("text/html; charset=utf-8", INDEX_HTML, ui)
}

/// `GET /ui/app.js`.
pub(crate) fn script(ui: &UiState) -> Response {
    page_file("text/javascript; charset=utf-8", APP_JS, ui)
}

/// `GET /ui/style.css`.
pub(crate) fn style(ui: &UiState) -> Response {
    page_file("text/css; charset=utf-8", STYLE_CSS, ui)
}

/// `GET /ui/config.json`: what the page needs of the settings (nothing of any tenant).
pub(crate) fn settings(ui: &UiState) -> Response {
    Json(&ui.config).into_response()
}

/// `GET /ui/regions.geojson`: the deployment's regions (configuration, not any tenant's data),
/// for their outlines on the page's maps.
pub(crate) fn regions(ui: &UiState) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "application/geo+json")], ui.regions_geojson.clone()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_url_needs_http_a_host_and_the_three_placeholders() {
        let ui = |url: &str| UiConfig { tile_url: Some(url.to_owned()), tile_attribution: None };
        assert_eq!(ui("https://tile.example.org/{z}/{x}/{y}.png").validate(), Ok(()));
        assert_eq!(ui("http://localhost:8081/t/{z}/{x}/{y}").validate(), Ok(()));
        assert!(ui("ftp://tile.example.org/{z}/{x}/{y}.png").validate().is_err());
        assert!(ui("https:///{z}/{x}/{y}.png").validate().is_err());
        assert!(ui("https://tile.example.org/{z}/{x}.png").validate().unwrap_err().contains("{y}"));
        assert!(ui("https://evil.example' 'unsafe-inline/{z}/{x}/{y}").validate().is_err());
        assert_eq!(tile_origin("https://a.tile.example:8443/{z}/{x}/{y}.png"), Some("https://a.tile.example:8443"));
    }
}
