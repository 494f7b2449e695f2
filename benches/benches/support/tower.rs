//! tower-sessions' stores as a [`Subject`], shared by the bench binaries
//! that compare with them (tower-sessions is a dev-dependency only).

use std::collections::HashMap;

use benches::{IDLE_TIMEOUT_SECS, Subject};
use tower_sessions_core::SessionStore;
use tower_sessions_core::session::{Id, Record};

/// A tower-sessions store, used as its session layer uses it.
///
/// tower-sessions has no touch: it extends a session by saving the whole
/// record with the new expiry, which is what is measured as its touch.
/// Rotation is its `cycle_id`: delete the record, then create it under a new
/// ID.
#[derive(Debug)]
pub(crate) struct Tower<S>(pub(crate) S);

impl<S: SessionStore> Tower<S> {
    fn expiry() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(IDLE_TIMEOUT_SECS as i64)
    }
}

impl<S: SessionStore> Subject for Tower<S> {
    type Handle = Id;
    type Loaded = Record;

    fn unused_handle(&self) -> Self::Handle {
        Id::default()
    }

    fn handle_of(&self, loaded: &Self::Loaded) -> Self::Handle {
        loaded.id
    }

    async fn create(&self, payload: &str) -> Self::Handle {
        let mut record = Record {
            id: Id::default(),
            data: HashMap::from([(
                "payload".to_owned(),
                serde_json::Value::String(payload.to_owned()),
            )]),
            expiry_date: Self::expiry(),
        };
        self.0.create(&mut record).await.expect("create");
        record.id
    }

    async fn load(&self, handle: &Self::Handle) -> Option<Self::Loaded> {
        self.0.load(handle).await.expect("load")
    }

    async fn save(&self, loaded: &mut Self::Loaded) {
        self.0.save(loaded).await.expect("save");
    }

    async fn touch(&self, loaded: &mut Self::Loaded) {
        loaded.expiry_date = Self::expiry();
        self.0.save(loaded).await.expect("save");
    }

    async fn rotate(&self, loaded: &mut Self::Loaded) {
        self.0.delete(&loaded.id).await.expect("delete");
        loaded.id = Id::default();
        self.0.create(loaded).await.expect("create");
    }

    async fn destroy(&self, handle: &Self::Handle) {
        self.0.delete(handle).await.expect("delete");
    }

    async fn update(&self, handle: &Self::Handle, value: u64) {
        let loaded = self
            .0
            .load(handle)
            .await
            .expect("load")
            .expect("a live session");
        self.change_and_save(loaded, value).await;
    }

    async fn change_and_save(&self, mut loaded: Self::Loaded, value: u64) {
        loaded.data.insert("n".to_owned(), value.into());
        loaded.expiry_date = Self::expiry();
        self.0.save(&loaded).await.expect("save");
    }
}
