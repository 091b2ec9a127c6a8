use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptops_platform::runtime::main(
        promptops_gateway::SERVICE,
        promptops_gateway::Config::from_env,
        promptops_gateway::run,
    )
}
