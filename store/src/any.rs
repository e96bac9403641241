//! A store chosen at run time: embedded or ScyllaDB, behind the same traits.

use tripline_model::{TenantId, TripId, VehicleId};

use crate::records::{ChangeBatch, Checkpoint, KeptWrite, Page, Rejection, StoredPoint, TripKey, TripRecord};
use crate::{
    BatchWrite, ChangeFeed, EmbeddedStore, PointStore, Registry, RejectionStore, ScyllaStore, StoreResult, TripStore,
    WriteSet,
};

/// Either backend.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The embedded LSM store.
    Embedded(EmbeddedStore),
    /// ScyllaDB / Cassandra.
    Scylla(ScyllaStore),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($store) => $call.await,
            AnyStore::Scylla($store) => $call.await,
        }
    };
    (sync $self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($store) => $call,
            AnyStore::Scylla($store) => $call,
        }
    };
}

impl Registry for AnyStore {
    async fn create_tenant(&self, tenant: &TenantId, api_key_hash: &str) -> StoreResult<()> {
        delegate!(self, s => s.create_tenant(tenant, api_key_hash))
    }
    async fn tenant_for_key(&self, api_key_hash: &str) -> StoreResult<Option<TenantId>> {
        delegate!(self, s => s.tenant_for_key(api_key_hash))
    }
    async fn replace_api_key(&self, tenant: &TenantId, api_key_hash: Option<&str>) -> StoreResult<Option<String>> {
        delegate!(self, s => s.replace_api_key(tenant, api_key_hash))
    }
    async fn tenant_exists(&self, tenant: &TenantId) -> StoreResult<bool> {
        delegate!(self, s => s.tenant_exists(tenant))
    }
    async fn add_vehicles(&self, tenant: &TenantId, vehicles: &[VehicleId]) -> StoreResult<()> {
        delegate!(self, s => s.add_vehicles(tenant, vehicles))
    }
    async fn vehicle_tenant(&self, vehicle: &VehicleId) -> StoreResult<Option<TenantId>> {
        delegate!(self, s => s.vehicle_tenant(vehicle))
    }
    async fn set_vehicle_secrets(&self, secrets: &[(VehicleId, Option<String>)]) -> StoreResult<()> {
        delegate!(self, s => s.set_vehicle_secrets(secrets))
    }
    async fn vehicle_secret(&self, vehicle: &VehicleId) -> StoreResult<Option<String>> {
        delegate!(self, s => s.vehicle_secret(vehicle))
    }
    async fn all_vehicle_secrets(&self) -> StoreResult<Vec<(VehicleId, String)>> {
        delegate!(self, s => s.all_vehicle_secrets())
    }
}

impl PointStore for AnyStore {
    async fn write_points(&self, points: &[StoredPoint]) -> StoreResult<()> {
        delegate!(self, s => s.write_points(points))
    }
    async fn vehicle_points(&self, vehicle: &VehicleId, from_ms: i64, to_ms: i64) -> StoreResult<Vec<StoredPoint>> {
        delegate!(self, s => s.vehicle_points(vehicle, from_ms, to_ms))
    }
    async fn trip_points(
        &self,
        tenant: &TenantId,
        trip_id: &TripId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Option<Page<StoredPoint>>> {
        delegate!(self, s => s.trip_points(tenant, trip_id, cursor, limit))
    }
    async fn seal_trip(&self, vehicle: &VehicleId, trip_id: &TripId, from_ms: i64, to_ms: i64) -> StoreResult<bool> {
        delegate!(self, s => s.seal_trip(vehicle, trip_id, from_ms, to_ms))
    }
    async fn seal_trip_interrupted(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<bool> {
        delegate!(self, s => s.seal_trip_interrupted(vehicle, trip_id, from_ms, to_ms))
    }
}

impl TripStore for AnyStore {
    async fn upsert_trips(&self, trips: &[TripRecord]) -> StoreResult<()> {
        delegate!(self, s => s.upsert_trips(trips))
    }
    async fn delete_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoreResult<()> {
        delegate!(self, s => s.delete_trip(tenant, vehicle, trip_id))
    }
    async fn trip(&self, tenant: &TenantId, trip_id: &TripId) -> StoreResult<Option<TripRecord>> {
        delegate!(self, s => s.trip(tenant, trip_id))
    }
    async fn trip_of_vehicle(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> StoreResult<Option<TripRecord>> {
        delegate!(self, s => s.trip_of_vehicle(tenant, vehicle, trip_id))
    }
    async fn scan_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        delegate!(self, s => s.scan_trips(cursor, limit))
    }

    async fn scan_open_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        delegate!(self, s => s.scan_open_trips(cursor, limit))
    }
    fn keep_written(&self) {
        delegate!(sync self, s => s.keep_written())
    }
    fn take_written(&self, key: &TripKey, writer: &str, seq: u64) -> Option<KeptWrite> {
        delegate!(sync self, s => s.take_written(key, writer, seq))
    }
}

impl BatchWrite for AnyStore {
    async fn write_batch(&self, set: &WriteSet) -> StoreResult<()> {
        delegate!(self, s => s.write_batch(set))
    }
}

impl RejectionStore for AnyStore {
    async fn append_rejections(&self, rejections: &[Rejection]) -> StoreResult<()> {
        delegate!(self, s => s.append_rejections(rejections))
    }
    async fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Rejection>> {
        delegate!(self, s => s.rejections(tenant, cursor, limit))
    }
}

impl ChangeFeed for AnyStore {
    async fn read_changes(&self, checkpoint: &Checkpoint, limit: usize) -> StoreResult<ChangeBatch> {
        delegate!(self, s => s.read_changes(checkpoint, limit))
    }

    async fn feed_head(&self) -> StoreResult<Checkpoint> {
        delegate!(self, s => s.feed_head())
    }

    fn feed_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        delegate!(sync self, s => s.feed_signal())
    }
}

impl crate::WebhookStore for AnyStore {
    async fn put_webhook(&self, webhook: &crate::Webhook, from: &Checkpoint) -> StoreResult<()> {
        delegate!(self, s => s.put_webhook(webhook, from))
    }
    async fn remove_webhook(&self, id: &str) -> StoreResult<Option<crate::Webhook>> {
        delegate!(self, s => s.remove_webhook(id))
    }
    async fn webhooks(&self) -> StoreResult<Vec<crate::Webhook>> {
        delegate!(self, s => s.webhooks())
    }
    async fn outbox(&self, id: &str) -> StoreResult<Option<(Checkpoint, Vec<crate::OutboxItem>)>> {
        delegate!(self, s => s.outbox(id))
    }
    async fn enqueue(&self, id: &str, items: &[crate::OutboxItem], cursor: &Checkpoint) -> StoreResult<()> {
        delegate!(self, s => s.enqueue(id, items, cursor))
    }
    async fn settle(&self, id: &str, settled: &[(crate::OutboxItem, crate::DeliveryAttempt)]) -> StoreResult<()> {
        delegate!(self, s => s.settle(id, settled))
    }
    async fn deliveries(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<crate::DeliveryAttempt>> {
        delegate!(self, s => s.deliveries(tenant, cursor, limit))
    }
}
