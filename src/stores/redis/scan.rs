//! `list`: the lock keys under a prefix, by `SCAN` (never `KEYS`), on every master of a
//! Cluster.

use std::collections::BTreeMap;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{cmd, Value};

use super::conn::{op_error, Conn};
use super::keys;
use crate::store::StoreError;

/// Keys per `SCAN` step: large enough to finish big key spaces in few round trips, small
/// enough not to block the server noticeably.
const SCAN_COUNT: u32 = 1000;

/// The string keys (exclusive holdings) and sorted sets (groups of readers or permit
/// holders, or someone else's data, which `inspect` tells apart) that start with `prefix`,
/// derived keys left out, sorted.
pub(super) async fn lock_keys(conn: &Conn, prefix: &str) -> Result<Vec<String>, StoreError> {
    let pattern = keys::match_pattern(prefix);
    let mut names = scan_all(conn, &pattern, "string").await?;
    names.extend(scan_all(conn, &pattern, "zset").await?);
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|name| !keys::is_derived(name))
        // Lock keys are UTF-8; anything else is not ours to list.
        .filter_map(|name| String::from_utf8(name).ok())
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The names of the keys of type `kind` matching `pattern`, on the node or on every master
/// of a Cluster, in no particular order.
pub(super) async fn scan_all(
    conn: &Conn,
    pattern: &str,
    kind: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut found = Vec::new();
    match conn {
        Conn::Single(_) | Conn::Sentinel(_) => {
            scan_node(conn, None, pattern, kind, &mut found).await?
        }
        Conn::Cluster(c) => {
            for master in masters(&mut c.clone()).await? {
                scan_node(conn, Some(master.slot), pattern, kind, &mut found).await?;
            }
        }
    }
    Ok(found)
}

/// One `SCAN` pass over one node: the node itself, or the master of `slot` on a Cluster.
async fn scan_node(
    conn: &Conn,
    slot: Option<u16>,
    pattern: &str,
    kind: &str,
    found: &mut Vec<Vec<u8>>,
) -> Result<(), StoreError> {
    let mut cursor: u64 = 0;
    loop {
        let mut scan = cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg(kind);
        let reply: Value = match (conn, slot) {
            (Conn::Cluster(c), Some(slot)) => {
                let route = Route::new(slot, SlotAddr::Master);
                c.clone()
                    .route_command(
                        scan,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
            _ => scan.query_async(&mut conn.clone()).await,
        }
        .map_err(|e| op_error(None, e))?;
        let (next, names): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(reply).map_err(|e| op_error(None, e.into()))?;
        found.extend(names);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A master of a Cluster: its address and one slot it serves (routing by that slot reaches
/// it).
pub(super) struct Master {
    pub host: String,
    pub port: u16,
    pub slot: u16,
}

/// The masters, from `CLUSTER SLOTS`.
pub(super) async fn masters(
    conn: &mut redis::cluster_async::ClusterConnection,
) -> Result<Vec<Master>, StoreError> {
    let reply = conn
        .route_command(
            cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .map_err(|e| op_error(None, e))?;
    let ranges: Vec<Vec<Value>> =
        redis::from_redis_value(reply).map_err(|e| op_error(None, e.into()))?;
    // (host, port) -> first slot it serves
    let mut masters: BTreeMap<(String, u16), u16> = BTreeMap::new();
    for range in ranges {
        let (Some(start), Some(master)) = (range.first(), range.get(2)) else {
            continue;
        };
        let Ok(start) = redis::from_redis_value_ref::<u16>(start) else {
            continue;
        };
        let Ok(node) = redis::from_redis_value_ref::<Vec<Value>>(master) else {
            continue;
        };
        let host = node
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let port = node
            .get(1)
            .and_then(|v| redis::from_redis_value_ref::<u16>(v).ok());
        if let (Some(host), Some(port)) = (host, port) {
            masters.entry((host, port)).or_insert(start);
        }
    }
    Ok(masters
        .into_iter()
        .map(|((host, port), slot)| Master { host, port, slot })
        .collect())
}
