fn main() -> std::process::ExitCode {
    ec2_deploy_action::cli::main()
}
