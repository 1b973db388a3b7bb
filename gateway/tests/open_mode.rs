//! Development mode (any access key) only on loopback: a gateway whose
//! listeners face a network refuses to start in it.

use cairn_gateway::config::GatewayConfig;
use cairn_gateway::gateway::{Gateway, GatewayError};
use tokio::net::TcpListener;

#[tokio::test]
async fn dev_mode_refuses_listeners_off_loopback() {
    let config = GatewayConfig::for_test(vec!["http://127.0.0.1:1".into()]);
    assert!(config.dev_any_key);
    let open = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let nbd = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match Gateway::start(config.clone(), open, nbd).await {
        Err(GatewayError::OpenOffLoopback(addr)) => assert!(addr.ip().is_unspecified()),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started in dev mode on 0.0.0.0"),
    }
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nbd = TcpListener::bind("0.0.0.0:0").await.unwrap();
    assert!(matches!(
        Gateway::start(config, http, nbd).await,
        Err(GatewayError::OpenOffLoopback(_))
    ));
}
