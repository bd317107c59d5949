//! Secrets in what is shown: connection URLs with their passwords masked.

/// What a secret is shown as.
pub const MASK: &str = "***";

/// `redis://user:pass@host` → `redis://user:***@host` (a URL without a
/// password is returned as it is); `None` if `s` is not a URL.
pub fn mask_url_password(s: &str) -> Option<String> {
    let scheme_end = s.find("://")? + 3;
    let rest = &s[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Some(s.to_string());
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:{MASK}", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    Some(format!("{}{masked}{}", &s[..scheme_end], &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_is_masked() {
        assert_eq!(
            mask_url_password("rediss://u:secret@h:1/0").as_deref(),
            Some("rediss://u:***@h:1/0")
        );
        assert_eq!(
            mask_url_password("redis://h/0@x").as_deref(),
            Some("redis://h/0@x")
        );
        assert_eq!(mask_url_password("no url"), None);
    }
}
