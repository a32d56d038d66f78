//! A proptest state machine: random sequences of get / try_get / drop / detach /
//! discard / close on one thread, checked step by step against a simple model of
//! what the pool must hold.

mod common;

use std::time::Duration;

use common::{FakeConn, FakeManager, SOON};
use proptest::prelude::*;
use stickypool::{Error, Pool, PooledConnection};

const MAX: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Get,
    TryGet,
    Drop(usize),
    Detach(usize),
    Discard(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Get),
        2 => Just(Op::TryGet),
        4 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Detach),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => Just(Op::Close),
    ]
}

#[derive(Debug, Default)]
struct Model {
    idle: u32,
    held: u32,
    closed_by_pool: u64,
    closed: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let manager = FakeManager::new();
        let pool = Pool::builder()
            .max_size(MAX)
            .min_idle(Some(0))
            .connection_timeout(SOON)
            .test_on_check_out(false)
            .build(manager.clone())
            .unwrap();
        let mut model = Model::default();
        let mut guards: Vec<PooledConnection<'_, FakeManager>> = Vec::new();
        let mut detached: Vec<FakeConn> = Vec::new();

        for op in ops {
            match op {
                Op::Get if model.closed => {
                    prop_assert!(matches!(pool.get(), Err(Error::Closed)));
                }
                Op::Get if model.held == MAX => {
                    let result = pool.get_timeout(Duration::from_millis(1));
                    let timed_out = matches!(result, Err(Error::Timeout { .. }));
                    prop_assert!(timed_out, "expected a timeout");
                }
                Op::Get => {
                    guards.push(pool.get().expect("a connection is free or can be opened"));
                    model.idle = model.idle.saturating_sub(1);
                    model.held += 1;
                }
                Op::TryGet => match pool.try_get() {
                    Some(conn) => {
                        prop_assert!(!model.closed && model.idle > 0);
                        guards.push(conn);
                        model.idle -= 1;
                        model.held += 1;
                    }
                    None => prop_assert!(model.closed || model.idle == 0),
                },
                Op::Drop(i) | Op::Detach(i) | Op::Discard(i) if !guards.is_empty() => {
                    let guard = guards.swap_remove(i % guards.len());
                    model.held -= 1;
                    match op {
                        Op::Drop(_) if model.closed => {
                            drop(guard);
                            model.closed_by_pool += 1;
                        }
                        Op::Drop(_) => {
                            drop(guard);
                            model.idle += 1;
                        }
                        Op::Detach(_) => detached.push(guard.detach()),
                        _ => {
                            guard.discard();
                            model.closed_by_pool += 1;
                        }
                    }
                }
                Op::Drop(_) | Op::Detach(_) | Op::Discard(_) => {}
                Op::Close => {
                    pool.close();
                    if !model.closed {
                        model.closed_by_pool += u64::from(model.idle);
                        model.idle = 0;
                        model.closed = true;
                    }
                }
            }
            let state = pool.state();
            prop_assert_eq!(state.idle_connections, model.idle);
            prop_assert_eq!(state.in_use, model.held);
            prop_assert_eq!(state.connections, model.idle + model.held);
            prop_assert!(state.connections <= MAX);
            prop_assert_eq!(manager.script.closed(), model.closed_by_pool);
        }
        drop(guards);
        drop(pool);
        drop(detached);
        manager.script.assert_all_closed_once();
    }
}
