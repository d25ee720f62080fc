//! A view hydrated with its synchronous code even where the page hydrates asynchronously.
//!
//! The lazy tabs (`tabs`) make the page hydrate with `hydrate_lazy`, which walks the
//! views asynchronously so that a lazy route can wait for its chunk. That walk is
//! generic code per view type: a second copy of every component's hydration beside the
//! synchronous one, which each route's `AnyView` keeps too. Nothing inside the chat tab
//! or the page's header waits for code to hydrate, so [`SyncHydrate`] hydrates them with the
//! synchronous copy, and the asynchronous one is never compiled (~14 % of the WASM).

use leptos::tachys::{
    html::attribute::{any_attribute::AnyAttribute, Attribute},
    hydration::Cursor,
    ssr::StreamBuilder,
    view::{add_attr::AddAnyAttr, Position, PositionState, Render, RenderHtml},
};

/// `V`, whose asynchronous hydration is its synchronous one. Only for views that load no
/// code on demand (no lazy route inside).
pub(crate) struct SyncHydrate<V>(pub V);

impl<V: Render> Render for SyncHydrate<V> {
    type State = V::State;

    fn build(self) -> Self::State {
        self.0.build()
    }

    fn rebuild(self, state: &mut Self::State) {
        self.0.rebuild(state);
    }
}

impl<V: RenderHtml> RenderHtml for SyncHydrate<V> {
    type AsyncOutput = SyncHydrate<V::AsyncOutput>;
    type Owned = SyncHydrate<V::Owned>;

    const MIN_LENGTH: usize = V::MIN_LENGTH;
    const EXISTS: bool = V::EXISTS;

    fn dry_resolve(&mut self) {
        self.0.dry_resolve();
    }

    async fn resolve(self) -> Self::AsyncOutput {
        SyncHydrate(self.0.resolve().await)
    }

    fn html_len(&self) -> usize {
        self.0.html_len()
    }

    fn to_html_with_buf(
        self,
        buf: &mut String,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0
            .to_html_with_buf(buf, position, escape, mark_branches, extra_attrs);
    }

    fn to_html_async_with_buf<const OUT_OF_ORDER: bool>(
        self,
        buf: &mut StreamBuilder,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0.to_html_async_with_buf::<OUT_OF_ORDER>(
            buf,
            position,
            escape,
            mark_branches,
            extra_attrs,
        );
    }

    fn hydrate<const FROM_SERVER: bool>(
        self,
        cursor: &Cursor,
        position: &PositionState,
    ) -> Self::State {
        self.0.hydrate::<FROM_SERVER>(cursor, position)
    }

    /// The point of the type: the synchronous hydration, with nothing to wait for.
    async fn hydrate_async(self, cursor: &Cursor, position: &PositionState) -> Self::State {
        self.0.hydrate::<true>(cursor, position)
    }

    fn into_owned(self) -> Self::Owned {
        SyncHydrate(self.0.into_owned())
    }
}

impl<V: AddAnyAttr> AddAnyAttr for SyncHydrate<V> {
    type Output<A: Attribute> = SyncHydrate<V::Output<A>>;

    fn add_any_attr<A: Attribute>(self, attr: A) -> Self::Output<A>
    where
        Self::Output<A>: RenderHtml,
    {
        SyncHydrate(self.0.add_any_attr(attr))
    }
}
