//! `GET /openapi.json` is generated from the handlers; this keeps it true: every
//! documented operation exists and answers one of its documented statuses with a body
//! of the documented shape, documented paths refuse undocumented methods, and every
//! member serves the same API whatever its role.

use chorus_tests::*;
use serde_json::{Value, json};

/// Call `method path` on `node` with a sample request; status and JSON body.
async fn call(node: &Node, method: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let mut url = node.url(&path.replace("{id}", "1").replace("{name}", "nobody"));
    if path.ends_with("/stream") {
        url.push_str("?limit=0"); // a stream that ends at once
    }
    let client = awc::Client::new();
    let req = match method {
        "get" => client.get(&url),
        "post" => client.post(&url),
        "delete" => client.delete(&url),
        "put" => client.put(&url),
        "patch" => client.patch(&url),
        other => anyhow::bail!("unexpected method {other}"),
    };
    let mut resp = if method == "post" {
        req.insert_header(("content-type", "application/json"))
            .send_body(json!({"message": "from the openapi test", "writeConcern": 1}).to_string())
            .await
    } else {
        req.send().await
    }
    .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let body = resp
        .body()
        .limit(64 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// The properties a schema requires (following one `$ref` into the components).
fn required<'a>(spec: &'a Value, schema: &'a Value) -> Vec<&'a str> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &spec["components"]["schemas"][r.rsplit('/').next().unwrap_or_default()],
        None => schema,
    };
    schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn check_node(http: &Http, node: &Node) -> anyhow::Result<Vec<String>> {
    let (status, spec) = http.get(&node.url("/openapi.json")).await?;
    anyhow::ensure!(
        status == 200 && spec["openapi"].is_string(),
        "no OpenAPI document: {spec}"
    );
    let mut paths = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        paths.push(path.clone());
        for method in ["get", "post", "delete", "put", "patch"] {
            let op = &item[method];
            if path == "/stepDown" && method == "post" && !node.name.starts_with('s') {
                // It would hand the set to another member mid-test: see the end.
                continue;
            }
            let (status, body) = call(node, method, path).await?;
            if op.is_null() {
                assert_eq!(
                    status, 405,
                    "{} {method} {path}: undocumented method answered {status}",
                    node.name
                );
                continue;
            }
            let documented = &op["responses"][status.to_string()];
            assert!(
                !documented.is_null(),
                "{} {method} {path} answered {status}, not documented: {body}",
                node.name
            );
            if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
                let schema = Value::Object(schema.clone());
                let (item_schema, sample) = if schema["type"] == "array" {
                    (
                        schema["items"].clone(),
                        body.as_array().and_then(|a| a.first()).cloned(),
                    )
                } else {
                    (schema.clone(), Some(body.clone()))
                };
                if let Some(sample) = sample {
                    for field in required(&spec, &item_schema) {
                        assert!(
                            !sample[field].is_null(),
                            "{} {method} {path}: {field} missing in {sample}",
                            node.name
                        );
                    }
                }
            }
        }
    }
    Ok(paths)
}

#[actix_rt::test]
async fn the_openapi_documents_match_what_the_nodes_serve() -> anyhow::Result<()> {
    let dir = TestDir::new("openapi");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let master_paths = check_node(&http, &master).await?;
    let secondary_paths = check_node(&http, &nodes[0]).await?;
    for p in [
        "/hello",
        "/stepDown",
        "/newMessage",
        "/messages",
        "/health",
        "/status",
        "/metrics",
        "/messages/{id}/status",
        "/members/{name}",
        "/members",
    ] {
        assert!(
            master_paths.iter().any(|m| m == p),
            "{p} is not in the master's document"
        );
    }
    // One node, any role: every member serves and documents the same API (a secondary
    // answers what only the master does with a documented 503 or 404).
    assert_eq!(master_paths, secondary_paths);
    for p in ["/members/{name}", "/members", "/newMessage"] {
        let method = if p == "/members/{name}" {
            "delete"
        } else {
            "post"
        };
        let (status, body) = call(&nodes[0], method, p).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("not_writable")),
            "secondary {method} {p}: {body}"
        );
        assert!(
            body["primary"].as_str() == Some(master.http.to_string().as_str()),
            "the 503 names the master: {body}"
        );
    }
    Ok(())
}
