//! A gRPC reflection client (grpcurl is not packaged here): lists the services a daemon
//! advertises on its unix socket.

use hyper_util::rt::TokioIo;
use std::path::Path;
use tonic::transport::{Endpoint, Uri};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A gRPC channel over nexd's unix socket.
async fn channel(socket: std::path::PathBuf) -> Result<tonic::transport::Channel, String> {
    Endpoint::from_static("http://nexd.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(s).await?))
            }
        }))
        .await
        .map_err(|e| e.to_string())
}

/// Service names reported by `grpc.reflection.v1`.
pub fn list_services(socket: &Path) -> Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let channel = channel(socket).await?;
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let msg = stream
            .message()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no reflection response")?;
        match msg.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                Ok(l.service.into_iter().map(|s| s.name).collect())
            }
            other => Err(format!("unexpected reflection response: {other:?}")),
        }
    })
}

/// `grpc.health.v1.Health/Check` of `service` ("" = the server): the serving status number
/// (1 = SERVING).
pub fn health_check(socket: &Path, service: &str) -> Result<i32, String> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let channel = channel(socket).await?;
        let r = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.into_inner().status)
    })
}
