//! The one change `register` makes to a session's planning: a query planner that plans
//! searches (DataFusion has no other hook for extension nodes), with the rules of
//! [`super::vector_search::rules`]. The session state is rebuilt around it, and everything
//! else of the session is kept as it was: its id, its settings, and each function name
//! bound to the very function it named (a name one function overrides on another's alias
//! keeps the override).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, WindowUDF};
use datafusion::optimizer::OptimizerRule;

use crate::error::Result;
use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::node::VectorSearchPlanner;
use crate::sql::vector_search::planner::JammiQueryPlanner;
use crate::sql::vector_search::rules::{OrderByDistanceRule, ProjectionIntoSearchRule};

/// `state` with the search planners and rules added.
pub(crate) fn with_search(
    state: &SessionState,
    search: Arc<SearchContext>,
    weak: Weak<parking_lot::RwLock<SessionState>>,
) -> Result<SessionState> {
    let create_default = state
        .config_options()
        .catalog
        .create_default_catalog_and_schema;
    let planner = Arc::new(JammiQueryPlanner::new(
        state.query_planner().clone(),
        search.clone(),
    ));
    // The ORDER BY rule first, so that DataFusion's rules never carry the query vector of a
    // distance call the search replaces; narrowing a search's columns last.
    let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![Arc::new(OrderByDistanceRule)];
    rules.extend(
        state
            .optimizers()
            .iter()
            .filter(|r| !r.name().starts_with("jammi_"))
            .cloned(),
    );
    rules.push(Arc::new(ProjectionIntoSearchRule));
    let mut builder = SessionStateBuilder::new_from_existing(state.clone())
        .with_session_id(state.session_id().to_string())
        .with_query_planner(planner)
        .with_optimizer_rules(rules);
    // The builder registers functions one after another (name, then aliases): in this
    // order every name ends bound to the function it was bound to.
    *builder.scalar_functions() = Some(registration_order(state.scalar_functions()));
    *builder.aggregate_functions() = Some(registration_order(state.aggregate_functions()));
    *builder.window_functions() = Some(registration_order(state.window_functions()));
    *builder.higher_order_functions() = Some(registration_order(state.higher_order_functions()));
    let mut new = builder.build();
    // The builder turns this off when the default catalog exists; `SHOW ALL` must not change.
    new.config_mut()
        .options_mut()
        .catalog
        .create_default_catalog_and_schema = create_default;
    new.register_relation_planner(Arc::new(VectorSearchPlanner::new(search, weak)))?;
    Ok(new)
}

/// The names a function registers under.
trait Registered {
    fn names(&self) -> Vec<String>;
}

macro_rules! registered {
    ($($t:ty),*) => {$(
        impl Registered for $t {
            fn names(&self) -> Vec<String> {
                let mut v = vec![self.name().to_string()];
                v.extend(self.aliases().iter().cloned());
                v
            }
        }
    )*};
}
registered!(ScalarUDF, AggregateUDF, WindowUDF, HigherOrderUDF);

/// The functions of `map`, ordered so that registering them one after another binds every
/// name of `map` to its function: a function goes after every other function that also
/// registers one of its names.
fn registration_order<T: Registered + ?Sized>(map: &HashMap<String, Arc<T>>) -> Vec<Arc<T>> {
    let mut funcs: Vec<Arc<T>> = Vec::new();
    let index = |funcs: &[Arc<T>], f: &Arc<T>| funcs.iter().position(|g| Arc::ptr_eq(g, f));
    let mut sorted: Vec<(&String, &Arc<T>)> = map.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (_, f) in &sorted {
        if index(&funcs, f).is_none() {
            funcs.push(Arc::clone(f));
        }
    }
    // before[i]: functions that must be registered before function i.
    let mut indegree = vec![0usize; funcs.len()];
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); funcs.len()];
    for (v, f) in funcs.iter().enumerate() {
        for name in f.names() {
            if let Some(owner) = map.get(&name).and_then(|o| index(&funcs, o))
                && owner != v
            {
                after[v].push(owner);
                indegree[owner] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..funcs.len()).filter(|i| indegree[*i] == 0).collect();
    let mut order = Vec::with_capacity(funcs.len());
    let mut done = vec![false; funcs.len()];
    while let Some(i) = ready.pop() {
        done[i] = true;
        order.push(i);
        for &o in &after[i] {
            indegree[o] -= 1;
            if indegree[o] == 0 {
                ready.push(o);
            }
        }
    }
    // Functions that claim each other's names (none in DataFusion) keep their map order.
    order.extend((0..funcs.len()).filter(|i| !done[*i]));
    order.into_iter().map(|i| Arc::clone(&funcs[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers `order` as the builder does: each function under its names.
    fn replay(order: &[Arc<ScalarUDF>]) -> HashMap<String, Arc<ScalarUDF>> {
        let mut m = HashMap::new();
        for f in order {
            for n in f.names() {
                m.insert(n, Arc::clone(f));
            }
        }
        m
    }

    #[test]
    fn every_name_ends_bound_to_its_function() {
        // 20 built-ins, each overridden on its own name by a function that is also
        // registered under another name: a random order gets some of them wrong.
        let builtins: Vec<Arc<ScalarUDF>> = datafusion::functions::all_default_functions()
            .into_iter()
            .take(20)
            .collect();
        let mut map = HashMap::new();
        for b in &builtins {
            for n in b.names() {
                map.insert(n, Arc::clone(b));
            }
        }
        let upper = datafusion::functions::string::upper();
        for (i, b) in builtins.iter().enumerate() {
            // `with_aliases` takes static names.
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            let names = [leak(b.name().to_string()), leak(format!("upper_{i}"))];
            let over = Arc::new(upper.as_ref().clone().with_aliases(names));
            for n in over.names() {
                map.insert(n, Arc::clone(&over));
            }
        }
        let replayed = replay(&registration_order(&map));
        assert_eq!(replayed.len(), map.len());
        for (name, f) in &map {
            assert!(Arc::ptr_eq(f, &replayed[name]), "{name}");
        }
    }
}
