//! Configuration parsing: defaults, precedence, validation messages, masking.

use std::time::Duration;

use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_raw(&RawConfig::layered(env, [], []))
}

#[test]
fn defaults_are_the_embedded_backends() {
    let config = config(&[]).unwrap();
    assert_eq!(config.http.bind.to_string(), "127.0.0.1:8000");
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.backends.database, DatabaseConfig::Sqlite { path: PathBuf::from("./data/engram.db") });
    assert!(config.backends.redis_url.is_none() && config.backends.s3.is_none());
    assert_eq!(config.git_memory.repo_cache_dir, PathBuf::from("./data/repos"));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.http.body_limit_bytes, 16 * 1024 * 1024);
    assert_eq!(config.limits.federation_per_minute, 600);
    assert_eq!(
        (config.git_memory.max_repo_size_mb, config.git_memory.repo_url_schemes.clone()),
        (100, vec!["https".to_string()])
    );
}

#[test]
fn each_invalid_value_names_its_variable() {
    for (key, value) in [
        ("ENGRAM_BIND", "localhost"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://127.0.0.1"),
        ("MAX_REPO_SIZE_MB", "-3"),
        ("SYNC_INTERVAL_MINUTES", "often"),
        ("SSO_ENABLED", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("S3_BUCKET", "Bad_Bucket"),
        ("ENGRAM_BODY_LIMIT_MB", "0"),
        ("FEDERATION_RATE_LIMIT", "0"),
        ("SSO_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SSO_TRUSTED_PROXIES", "proxy.internal"),
        ("GITHUB_API_URL", "ftp://github.example"),
        ("REPO_URL_SCHEMES", "https,file"),
        ("REPO_URL_SCHEMES", "ssh"),
        ("REPO_URL_SCHEMES", " , "),
    ] {
        let err = config(&[(key, value)]).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn sso_needs_to_know_whom_to_trust() {
    let err = config(&[("SSO_ENABLED", "true")]).unwrap_err();
    assert_eq!(err.key, "SSO_ENABLED");
    let trusted = config(&[("SSO_ENABLED", "true"), ("SSO_TRUSTED_PROXIES", "10.1.0.0/16, ::1")]).unwrap();
    let [range, loopback] = trusted.auth.sso_trusted_proxies[..] else { panic!("two ranges") };
    assert!(range.contains("10.1.200.3".parse().unwrap()) && !range.contains("10.2.0.1".parse().unwrap()));
    assert!(range.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped addresses count as IPv4");
    assert!(loopback.contains("::1".parse().unwrap()) && !loopback.contains("127.0.0.1".parse().unwrap()));
    assert!(config(&[("SSO_ENABLED", "true"), ("SSO_SHARED_SECRET", "s3cret")]).is_ok());
}

#[test]
fn s3_keys_come_in_pairs_and_prefix_is_normalised() {
    let err = config(&[("S3_BUCKET", "b1b"), ("AWS_ACCESS_KEY_ID", "k")]).unwrap_err();
    assert_eq!(err.key, "AWS_SECRET_ACCESS_KEY");
    let s3 = config(&[("S3_BUCKET", "b1b"), ("S3_PREFIX", "/tenant/a/")]).unwrap().backends.s3.unwrap();
    assert_eq!(s3.prefix, "tenant/a/");
    assert_eq!(s3.region, "us-east-1");
}

#[test]
fn environment_beats_dotenv_beats_toml() {
    let toml =
        parse_toml("ENGRAM_BIND = \"127.0.0.1:1\"\nMAX_REPO_SIZE_MB = 7\nLOG_LEVEL = \"debug\"").unwrap();
    let dotenv =
        vec![("ENGRAM_BIND".to_string(), "127.0.0.1:2".to_string()), ("LOG_LEVEL".into(), "warn".into())];
    let env = vec![("LOG_LEVEL".to_string(), "error".to_string())];
    let raw = RawConfig::layered(env, dotenv, toml);
    let config = Config::from_raw(&raw).unwrap();
    assert_eq!(config.http.bind.port(), 2);
    assert_eq!(config.git_memory.max_repo_size_mb, 7);
    assert_eq!(config.log.level, "error");
    assert_eq!(raw.origin("MAX_REPO_SIZE_MB"), Some(Origin::Toml));
}

#[test]
fn toml_rejects_unknown_keys() {
    let err = parse_toml("DATABSE_URL = \"postgres://x/y\"").unwrap_err();
    assert!(err.message.contains("DATABSE_URL"));
}

#[test]
fn describe_masks_every_secret() {
    let config = config(&[
        ("DATABASE_URL", "postgres://engram:hunter2@db:5432/engram"),
        ("REDIS_URL", "redis://:redispw@cache:6379"),
        ("JWT_SECRET", "jwtsecretvalue"),
        ("API_KEY", "apikeyvalue"),
        ("S3_BUCKET", "bucket"),
        ("AWS_ACCESS_KEY_ID", "AKIDVALUE"),
        ("AWS_SECRET_ACCESS_KEY", "awssecretvalue"),
        ("OPENAI_API_KEY", "sk-openai"),
    ])
    .unwrap();
    let text = format!("{:?}", config.describe(&RawConfig::default()));
    for secret in ["hunter2", "redispw", "jwtsecretvalue", "apikeyvalue", "awssecretvalue", "sk-openai"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("postgres://engram:****@db:5432/engram"));
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn account_settings_have_defaults_and_bounds() {
    let defaults = config(&[]).unwrap().auth;
    assert_eq!(defaults.access_token_lifetime, Duration::from_secs(3600));
    assert_eq!(defaults.refresh_token_lifetime, Duration::from_secs(30 * 86_400));
    assert_eq!((defaults.login_rate_limit, defaults.register_rate_limit), (10, 5));
    assert_eq!((defaults.login_max_failures, defaults.login_lockout), (5, Duration::from_secs(900)));
    let set = config(&[
        ("ACCESS_TOKEN_TTL_SECS", "600"),
        ("REFRESH_TOKEN_TTL_DAYS", "7"),
        ("LOGIN_MAX_FAILURES", "3"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
    ])
    .unwrap()
    .auth;
    assert_eq!(set.access_token_lifetime, Duration::from_secs(600));
    assert_eq!(set.refresh_token_lifetime, Duration::from_secs(7 * 86_400));
    assert_eq!(set.login_max_failures, 3);
    assert_eq!(set.trusted_proxies.len(), 1);
    for (key, value) in
        [("ACCESS_TOKEN_TTL_SECS", "5"), ("REFRESH_TOKEN_TTL_DAYS", "0"), ("LOGIN_RATE_LIMIT", "x")]
    {
        assert_eq!(config(&[(key, value)]).unwrap_err().key, key);
    }
    let toml = parse_toml("LOGIN_LOCKOUT_SECS = 60").unwrap();
    assert_eq!(toml, vec![("LOGIN_LOCKOUT_SECS".to_string(), "60".to_string())]);
}

#[test]
fn llm_provider_precedence_is_base_url_then_openrouter_then_openai() {
    assert!(config(&[]).unwrap().llm.provider.is_none(), "no keys: rule-based stand-ins");
    let openai = config(&[("OPENAI_API_KEY", "sk-openai")]).unwrap().llm.provider.unwrap();
    assert_eq!((openai.kind, openai.model.as_str()), (LlmProviderKind::OpenAi, "gpt-4o-mini"));
    assert_eq!(openai.base_url.expose(), "https://api.openai.com/v1");
    assert_eq!(openai.api_key, Some(Secret::new("sk-openai")));
    let openrouter = config(&[("OPENAI_API_KEY", "sk-openai"), ("OPENROUTER_API_KEY", "sk-or")])
        .unwrap()
        .llm
        .provider
        .unwrap();
    assert_eq!(openrouter.kind, LlmProviderKind::OpenRouter);
    assert_eq!(openrouter.base_url.expose(), "https://openrouter.ai/api/v1");
    assert_eq!(
        (openrouter.model.as_str(), openrouter.api_key),
        ("openai/gpt-4o-mini", Some(Secret::new("sk-or")))
    );
    let custom = config(&[
        ("OPENROUTER_API_KEY", "sk-or"),
        ("LLM_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ("LLM_MODEL", "llama3.2"),
    ])
    .unwrap()
    .llm;
    let provider = custom.provider.unwrap();
    assert_eq!((provider.kind, provider.model.as_str()), (LlmProviderKind::Custom, "llama3.2"));
    assert_eq!(provider.api_key, None, "the OpenRouter key is not sent to another server");
    assert_eq!(custom.openrouter_api_key, Some(Secret::new("sk-or")));
    let named = config(&[("OPENAI_API_KEY", "sk"), ("LLM_MODEL", "gpt-4.1")]).unwrap().llm.provider.unwrap();
    assert_eq!(named.model, "gpt-4.1");
}

#[test]
fn llm_base_url_needs_a_model_and_a_base() {
    let err = config(&[("LLM_BASE_URL", "http://127.0.0.1:8080/v1")]).unwrap_err();
    assert_eq!(err.key, "LLM_MODEL", "{err}");
    for (key, value) in [
        ("LLM_BASE_URL", "ftp://llm.internal/v1"),
        ("LLM_BASE_URL", "localhost:11434"),
        ("LLM_BASE_URL", "http://127.0.0.1:11434/v1/chat/completions"),
        ("LLM_TIMEOUT_SECS", "0"),
        ("LLM_TIMEOUT_SECS", "601"),
        ("LLM_MAX_RETRIES", "11"),
    ] {
        let err = config(&[(key, value), ("LLM_MODEL", "m")]).unwrap_err();
        assert_eq!(err.key, key, "{value}: {err}");
    }
    let err = config(&[("LLM_API_KEY", "k"), ("OPENAI_API_KEY", "sk")]).unwrap_err();
    assert_eq!(err.key, "LLM_API_KEY");
    let https =
        config(&[("LLM_BASE_URL", "https://vllm.internal/v1"), ("LLM_MODEL", "m"), ("LLM_API_KEY", "k")])
            .unwrap()
            .llm;
    assert_eq!(https.provider.unwrap().api_key, Some(Secret::new("k")));
}

#[test]
fn llm_limits_have_defaults_and_keys_are_masked() {
    let defaults = config(&[]).unwrap().llm;
    assert_eq!((defaults.timeout, defaults.max_retries), (Duration::from_secs(60), 3));
    let set = config(&[
        ("LLM_TIMEOUT_SECS", "5"),
        ("LLM_MAX_RETRIES", "0"),
        ("LLM_BASE_URL", "http://llm.internal/v1"),
        ("LLM_MODEL", "m"),
        ("LLM_API_KEY", "llmkeyvalue"),
        ("OPENROUTER_API_KEY", "orkeyvalue"),
    ])
    .unwrap();
    assert_eq!((set.llm.timeout, set.llm.max_retries), (Duration::from_secs(5), 0));
    let text = format!("{:?} {:?}", set.describe(&RawConfig::default()), set);
    for secret in ["llmkeyvalue", "orkeyvalue"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("http://llm.internal/v1"));
    let toml = parse_toml("LLM_MODEL = \"m\"\nLLM_MAX_RETRIES = 2\nOPENAI_API_KEY = \"sk\"").unwrap();
    assert_eq!(toml.len(), 3);
}

#[test]
fn embeddings_are_local_unless_a_base_url_is_set() {
    assert_eq!(config(&[]).unwrap().embedding.provider, None);
    assert_eq!(
        config(&[("OPENAI_API_KEY", "sk-openai")]).unwrap().embedding.provider,
        None,
        "an OpenAI key alone does not send memories to OpenAI"
    );
    for key in ["EMBEDDING_MODEL", "EMBEDDING_API_KEY", "EMBEDDING_DIMENSIONS"] {
        assert_eq!(config(&[(key, "1")]).unwrap_err().key, key, "{key} needs EMBEDDING_BASE_URL");
    }
    let custom = config(&[
        ("EMBEDDING_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ("EMBEDDING_MODEL", "nomic-embed-text"),
        ("EMBEDDING_DIMENSIONS", "768"),
        ("OPENAI_API_KEY", "sk-openai"),
    ])
    .unwrap()
    .embedding
    .provider
    .unwrap();
    assert_eq!((custom.model.as_str(), custom.dimensions), ("nomic-embed-text", Some(768)));
    assert_eq!(custom.api_key, None, "the OpenAI key is not sent to another server");
    let keyed =
        config(&[("EMBEDDING_BASE_URL", "https://embed.internal/v1"), ("EMBEDDING_API_KEY", "ek")]).unwrap();
    let keyed = keyed.embedding.provider.unwrap();
    assert_eq!((keyed.api_key, keyed.dimensions), (Some(Secret::new("ek")), None));
}

#[test]
fn openai_embeddings_default_the_model_and_borrow_the_openai_key() {
    let provider = config(&[("EMBEDDING_BASE_URL", "https://api.openai.com/v1"), ("OPENAI_API_KEY", "sk-o")])
        .unwrap()
        .embedding
        .provider
        .unwrap();
    assert_eq!(provider.model, DEFAULT_EMBEDDING_MODEL);
    assert_eq!(provider.api_key, Some(Secret::new("sk-o")));
    let own = config(&[
        ("EMBEDDING_BASE_URL", "https://api.openai.com/v1"),
        ("OPENAI_API_KEY", "sk-o"),
        ("EMBEDDING_API_KEY", "sk-e"),
    ])
    .unwrap();
    assert_eq!(own.embedding.provider.unwrap().api_key, Some(Secret::new("sk-e")));
}

#[test]
fn bad_embedding_settings_name_their_variable_and_keys_are_masked() {
    for (key, value) in [
        ("EMBEDDING_BASE_URL", "ftp://embed.internal/v1"),
        ("EMBEDDING_BASE_URL", "localhost:11434"),
        ("EMBEDDING_BASE_URL", "https://api.openai.com/v1/embeddings"),
        ("EMBEDDING_DIMENSIONS", "0"),
        ("EMBEDDING_DIMENSIONS", "wide"),
        ("EMBEDDING_DIMENSIONS", "100000"),
    ] {
        let mut pairs = vec![(key, value)];
        if key != "EMBEDDING_BASE_URL" {
            pairs.push(("EMBEDDING_BASE_URL", "https://api.openai.com/v1"));
        }
        let err = config(&pairs).unwrap_err();
        assert_eq!(err.key, key, "{value}: {err}");
        assert!(!err.to_string().contains('\n'));
    }
    let set =
        config(&[("EMBEDDING_BASE_URL", "http://embed.internal/v1"), ("EMBEDDING_API_KEY", "embedkeyvalue")])
            .unwrap();
    let described = set.describe(&RawConfig::default());
    let text = format!("{described:?} {set:?}");
    assert!(!text.contains("embedkeyvalue"), "leaked: {text}");
    assert!(text.contains("http://embed.internal/v1") && text.contains(DEFAULT_EMBEDDING_MODEL));
    for (key, _) in embedding::KEYS {
        assert!(described.iter().any(|(k, _, _)| k == key), "{key} is not described");
    }
    let local = config(&[]).unwrap().describe(&RawConfig::default());
    assert!(local.iter().any(|(k, v, _)| k == "EMBEDDING_BASE_URL" && v.contains("local model")));
    let toml = parse_toml("EMBEDDING_BASE_URL = \"http://e/v1\"\nEMBEDDING_DIMENSIONS = 384").unwrap();
    assert_eq!(toml.len(), 2);
}
