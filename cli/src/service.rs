//! `ferry service <component>`: one of Ferry's components in this process, with exactly
//! the flags of its own binary (`ferry-pairing`, `ferry-catalog`, ...). The image holds
//! only `ferry`, so this is how each pod of the Helm chart runs its component.

use clap::Subcommand;

/// `ferry service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub component: Component,
}

/// The components.
#[derive(Debug, Subcommand)]
pub enum Component {
    /// The pairing service (as `ferry-pairing`).
    Pairing(Box<ferry_pairing::Args>),
    /// The catalog (as `ferry-catalog`).
    Catalog(Box<ferry_catalog::Args>),
    /// The transfer service and its agent relay (as `ferry-transfer`).
    Transfer(Box<ferry_transfer::Args>),
    /// The scheduler (as `ferry-scheduler`).
    Scheduler(Box<ferry_scheduler::Args>),
    /// A node's agent (as `ferry-agent`).
    Agent(Box<ferry_agent::Args>),
    /// The gateway (as `ferry-gateway`).
    Gateway(Box<ferry_gateway::Args>),
    /// The controller of Ferry's custom resources and its admission webhook (as
    /// `ferry-controller`).
    Controller(Box<ferry_controller::Args>),
}

impl Component {
    pub fn name(&self) -> &'static str {
        match self {
            Component::Pairing(_) => "pairing",
            Component::Catalog(_) => "catalog",
            Component::Transfer(_) => "transfer",
            Component::Scheduler(_) => "scheduler",
            Component::Agent(_) => "agent",
            Component::Gateway(_) => "gateway",
            Component::Controller(_) => "controller",
        }
    }
}

/// Runs the component until SIGTERM or SIGINT.
pub async fn run(args: ServiceArgs) -> crate::Result<()> {
    let component = args.component.name();
    let outcome = match args.component {
        Component::Pairing(a) => ferry_pairing::run(*a).await,
        Component::Catalog(a) => ferry_catalog::run(*a).await,
        Component::Transfer(a) => ferry_transfer::run(*a).await,
        Component::Scheduler(a) => ferry_scheduler::run(*a).await,
        Component::Agent(a) => ferry_agent::run(*a).await,
        Component::Gateway(a) => ferry_gateway::run(*a).await,
        Component::Controller(a) => ferry_controller::run(*a).await,
    };
    outcome.map_err(|source| crate::Error::Service { component, source })
}
