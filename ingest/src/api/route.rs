//! One route table for the router and for the scope test: each entry's access is read
//! from its handler's first argument, so a handler without an authentication extractor
//! first does not compile as a route.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};

use crate::api::auth::{Operator, Public, ScopeMark, Tenant};
use crate::api::state::AppState;
use crate::store::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key.
    Public,
    /// A key of the tenant whose scope allows this one.
    Tenant(Scope),
    /// An operator key.
    Operator,
    /// A web console session of the tenant whose key's scope allows this one (a change
    /// also needs the session's CSRF token).
    Console(Scope),
}

/// An authentication extractor, and the access it enforces.
pub trait Guard {
    /// What the extractor lets through.
    const ACCESS: Access;
}

impl<S: ScopeMark> Guard for Tenant<S> {
    const ACCESS: Access = Access::Tenant(S::SCOPE);
}
impl Guard for Operator {
    const ACCESS: Access = Access::Operator;
}
impl Guard for Public {
    const ACCESS: Access = Access::Public;
}
/// A handler that answers a refused key in its own shape (Prometheus' error envelope,
/// counted ingest refusals) takes the guard's result.
impl<G: Guard, E> Guard for Result<G, E> {
    const ACCESS: Access = G::ACCESS;
}

/// A handler's extractor tuple (as axum's `Handler` sees it) whose first extractor is
/// a [`Guard`].
pub trait Guarded {
    /// The access of that first extractor.
    const ACCESS: Access;
}

macro_rules! guarded {
    ($($t:ident),*) => {
        impl<M, G: Guard, $($t,)*> Guarded for (M, G, $($t,)*) {
            const ACCESS: Access = G::ACCESS;
        }
    };
}
guarded!();
guarded!(T2);
guarded!(T2, T3);
guarded!(T2, T3, T4);
guarded!(T2, T3, T4, T5);
guarded!(T2, T3, T4, T5, T6);

/// One method on one path, with who may call it.
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path as axum matches it (`{name}` for a parameter).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    pub(crate) handler: MethodRouter<AppState>,
}

impl Route {
    fn new<H, T>(method: Method, filter: MethodFilter, path: &'static str, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: Guarded + 'static,
    {
        Route {
            method,
            path,
            access: T::ACCESS,
            handler: axum::routing::on(filter, handler),
        }
    }

    /// `GET path`.
    pub fn get<H, T>(path: &'static str, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: Guarded + 'static,
    {
        Route::new(Method::GET, MethodFilter::GET, path, handler)
    }

    /// `POST path`.
    pub fn post<H, T>(path: &'static str, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: Guarded + 'static,
    {
        Route::new(Method::POST, MethodFilter::POST, path, handler)
    }

    /// `DELETE path`.
    pub fn delete<H, T>(path: &'static str, handler: H) -> Route
    where
        H: Handler<T, AppState>,
        T: Guarded + 'static,
    {
        Route::new(Method::DELETE, MethodFilter::DELETE, path, handler)
    }
}
