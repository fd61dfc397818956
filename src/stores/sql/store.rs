//! The [`Store`](crate::Store) impl of the server stores, written once.
//!
//! A server store (PostgreSQL, MySQL) answers every operation on locks from its locking
//! mode: the field `session` (`Some` in session mode, [`SessionLocks`](super::session)) or
//! else the field `leases` (the lease row), whose methods have the operations' names and
//! arguments (some of them thin calls of its [`Table`](super::lease::Table), for those
//! alike in every dialect);
//! `describe` is the field `describe`, `kind` the scheme row's.
//! What differs — `capabilities`, `subscribe`, `close` — the store writes in the braces:
//!
//! ```text
//! server_store!(PostgresStore, crate::scheme::POSTGRES {
//!     fn capabilities(&self) -> Capabilities { Capabilities::ALL }
//!     async fn subscribe(&self, key: &str) -> Result<Option<Subscription>, StoreError> { … }
//!     async fn close(&self) -> Result<(), StoreError> { … }
//! });
//! ```

/// See the [module docs](self).
macro_rules! server_store {
    ($store:ty, $scheme:path { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn describe(&self) -> &str {
                &self.describe
            }

            fn kind(&self) -> &'static str {
                $scheme.kind
            }

            /// One statement or transaction (a reader's or a permit's: one
            /// transaction), finished in a task of its own if the caller goes away
            /// first (`stores::detach`), so that a cancelled caller never leaves a
            /// lock held.
            async fn try_acquire(
                &self,
                request: $crate::store::AcquireRequest<'_>,
            ) -> Result<$crate::store::Acquire, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.try_acquire(&request).await;
                }
                let (leases, gone) = (self.leases.clone(), self.leases.clone());
                let (key, owner) = (request.key.to_owned(), request.owner.to_owned());
                let (k, o) = (key.clone(), owner.clone());
                let (ttl, metadata) = (request.ttl, request.metadata.map(str::to_owned));
                let (kind, writer_waiting) = (request.kind, request.writer_waiting);
                let statement = async move {
                    let request = $crate::store::AcquireRequest::new(&key, &owner, ttl)
                        .with_metadata(metadata.as_deref())
                        .with_kind(kind)
                        .with_writer_waiting(writer_waiting);
                    leases.try_acquire(&request).await
                };
                let release = move || {
                    let (gone, k, o) = (gone.clone(), k.clone(), o.clone());
                    async move { gone.release(&k, &o).await }
                };
                $crate::stores::detach::acquire(request.key, &self.describe, statement, release)
                    .await
            }

            async fn take_over(
                &self,
                request: $crate::store::AcquireRequest<'_>,
            ) -> Result<$crate::store::TakeOver, $crate::store::StoreError> {
                if self.session.is_some() {
                    return Err($crate::store::StoreError::new(
                        $crate::store::StoreErrorKind::Unsupported,
                        format!("{} holds session locks, which only their own connection can give up: a held lock cannot be taken over", self.describe),
                    ));
                }
                self.leases.take_over(&request).await
            }

            async fn release(
                &self,
                key: &str,
                owner: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.release(key, owner).await;
                }
                self.leases.release(key, owner).await
            }

            async fn extend(
                &self,
                key: &str,
                owner: &str,
                ttl: Option<std::time::Duration>,
            ) -> Result<Option<$crate::store::Lease>, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.extend(key, owner, ttl).await;
                }
                self.leases.extend(key, owner, ttl).await
            }

            async fn set_metadata(
                &self,
                key: &str,
                owner: &str,
                metadata: Option<&str>,
            ) -> Result<bool, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return Ok(s.set_metadata(key, owner, metadata));
                }
                self.leases.set_metadata(key, owner, metadata).await
            }

            async fn force_release(&self, key: &str) -> Result<bool, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.force_release(key).await;
                }
                self.leases.force_release(key).await
            }

            async fn inspect(
                &self,
                key: &str,
            ) -> Result<Option<$crate::store::LockInfo>, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.inspect(key).await;
                }
                self.leases.inspect(key).await
            }

            async fn list(
                &self,
                prefix: &str,
            ) -> Result<Vec<$crate::store::LockInfo>, $crate::store::StoreError> {
                if let Some(s) = &self.session {
                    return s.list();
                }
                self.leases.list(prefix).await
            }

            async fn reap_expired(
                &self,
                prefix: &str,
            ) -> Result<Vec<$crate::store::LockInfo>, $crate::store::StoreError> {
                if self.session.is_some() {
                    return Err($crate::store::StoreError::new(
                        $crate::store::StoreErrorKind::Unsupported,
                        format!("{} holds session locks, which the server never expires: there are no expired locks to report", self.describe),
                    ));
                }
                self.leases.reap_expired(prefix).await
            }

            $($own)*
        }
    };
}

pub(crate) use server_store;
