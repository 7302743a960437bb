//! `starling`: the job submitter's command line for a Starling relay.
//!
//! The REST calls are `starling_api::Client`'s, the answers its types.
//!
//! - [`error`]: the one error type, with exit codes;
//! - [`params`]: `--param k=v` parsing (JSON when it parses, else a string).

mod error;
mod params;

use clap::{Parser, Subcommand};
use error::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};
use starling_api::{
    Client, CustomKernel, Input, Job, JobEvent, JobState, RegisterKernel, SubmitJob, Verification,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// Submit compute jobs to a Starling relay, follow them and fetch their results.
#[derive(Debug, Parser)]
#[command(version, name = "starling")]
struct Cli {
    /// The relay's base URL.
    #[arg(
        long,
        global = true,
        env = "STARLING_RELAY",
        default_value = "http://127.0.0.1:8080"
    )]
    relay: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, global = true, env = "STARLING_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Also trust the certificates in this PEM file for an https:// relay: its
    /// self-signed certificate (relay-server --tls-self-signed prints where it is) or a
    /// private CA's. The system's roots stay trusted.
    #[arg(long, global = true, env = "STARLING_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Print the relay's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the kernels the relay runs, with their parameters.
    Kernels,
    /// Register your own WGSL kernel, or read a registered one.
    Kernel {
        #[command(subcommand)]
        action: KernelCommand,
    },
    /// Submit a job; prints its id.
    Submit {
        /// Kernel id (see `starling kernels`).
        kernel: String,
        /// A parameter, NAME=VALUE; VALUE is JSON when it parses as JSON, else a string.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// A JSON file with the parameters object; --param entries override it.
        #[arg(long, value_name = "FILE")]
        params_json: Option<PathBuf>,
        /// A named input read from a file as raw bytes, NAME=FILE.
        #[arg(long = "input", short = 'i', value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Makes retrying this command safe: the relay returns the job the first
        /// submission with this key created.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Agreeing results from distinct volunteer wallets each unit needs (1 to 5);
        /// the relay's default (2) when absent. 1 trusts single results that pass the
        /// kernel's checks.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        quorum: Option<u32>,
        /// Follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Show a job's state and progress.
    Status {
        /// Job id.
        id: String,
    },
    /// Follow a job with a progress bar until it ends.
    Watch {
        /// Job id.
        id: String,
    },
    /// Download a finished job's result.
    Result {
        /// Job id.
        id: String,
        /// Where to write it (`-` for standard output).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Erase an ended job's data for good: inputs, outputs, result (its record and
    /// ledger entries stay).
    Purge {
        /// Job id.
        id: String,
    },
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state.
        #[arg(long, value_parser = ["queued", "running", "done", "failed", "cancelled"])]
        state: Option<String>,
        /// Jobs per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Follow every page instead of showing the first.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KernelCommand {
    /// Register a WGSL compute shader with its manifest; prints the kernel's id (its
    /// content address), which `starling submit ID` runs.
    Register {
        /// The WGSL source.
        source: PathBuf,
        /// The manifest: entry point, workgroup size, parameters, buffers, split,
        /// comparison and FLOPs per invocation (see the README).
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
    },
    /// Show a registered kernel: its owner, manifest and source.
    Show {
        /// The kernel's id.
        id: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::trusting(&cli.relay, cli.api_key.clone(), cli.ca_cert.as_deref())?;
    match cli.command {
        Command::Kernels => kernels(&client, cli.json).await,
        Command::Kernel {
            action: KernelCommand::Register { source, manifest },
        } => {
            let request = RegisterKernel {
                source: read_text(&source)?,
                manifest: serde_json::from_str(&read_text(&manifest)?).map_err(|e| {
                    CliError::Usage(format!(
                        "{}: not a kernel manifest: {e}",
                        manifest.display()
                    ))
                })?,
            };
            let kernel = client.register_kernel(&request).await?;
            if cli.json {
                print_json(&kernel);
            } else {
                println!("{}", kernel.id);
            }
            Ok(())
        }
        Command::Kernel {
            action: KernelCommand::Show { id },
        } => {
            // A content address is 64 hex digits; anything else would be a path of
            // its own once joined to the URL.
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CliError::Usage(format!(
                    "a kernel id is 64 hex digits (`starling kernels` lists them), not {:?}",
                    id.chars().take(80).collect::<String>()
                )));
            }
            let kernel = client.custom_kernel(&id.to_ascii_lowercase()).await?;
            if cli.json {
                print_json(&kernel);
            } else {
                print_custom_kernel(&kernel);
            }
            Ok(())
        }
        Command::Submit {
            kernel,
            params,
            params_json,
            inputs,
            idempotency_key,
            quorum,
            wait,
        } => {
            let request = SubmitJob {
                verification: quorum.map(|quorum| Verification { quorum }),
                ..SubmitJob::new(kernel, job_params(&params, params_json.as_deref())?)
            };
            let inputs = read_inputs(&inputs)?;
            let job = client
                .submit_multipart(&request, inputs, idempotency_key.as_deref())
                .await?;
            let id = job.id.to_string();
            if cli.json {
                print_json(&job);
            } else {
                println!("{id}");
            }
            if wait {
                watch(&client, &id).await?;
            }
            Ok(())
        }
        Command::Status { id } => {
            print_job(cli.json, &client.job(&id).await?);
            Ok(())
        }
        Command::Watch { id } => watch(&client, &id).await,
        Command::Result { id, output } => {
            let bytes = client.result(&id).await?.bytes;
            if output.as_os_str() == "-" {
                use std::io::Write as _;
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|source| CliError::File {
                        path: "standard output".into(),
                        source,
                    })
            } else {
                std::fs::write(&output, &bytes).map_err(|source| CliError::File {
                    path: output.display().to_string(),
                    source,
                })?;
                eprintln!("wrote {} bytes to {}", bytes.len(), output.display());
                Ok(())
            }
        }
        Command::Cancel { id } => {
            print_job(cli.json, &client.cancel(&id).await?);
            Ok(())
        }
        Command::Purge { id } => {
            print_job(cli.json, &client.purge(&id).await?);
            Ok(())
        }
        Command::Jobs { state, limit, all } => {
            let state = state
                .as_deref()
                .map(str::parse::<JobState>)
                .transpose()
                .map_err(|e| CliError::Usage(format!("--state: {e}")))?;
            let mut cursor = None;
            loop {
                let page = client
                    .jobs(state, limit.clamp(1, 500), cursor.as_deref())
                    .await?;
                if cli.json {
                    print_json(&page);
                } else {
                    for job in &page.jobs {
                        println!("{}", summary(job));
                    }
                }
                cursor = page.next;
                if !all || cursor.is_none() {
                    return Ok(());
                }
            }
        }
    }
}

/// A job record: as JSON with `--json`, else its one-line summary.
fn print_job(json: bool, job: &Job) {
    if json {
        print_json(job);
    } else {
        println!("{}", summary(job));
    }
}

fn print_json(value: &impl Serialize) {
    // Serialising our own types to a string cannot fail: every map key is a string.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// One line per job: id, state, kernel, units done of total, error if any.
fn summary(job: &Job) -> String {
    let mut line = format!(
        "{}  {:<9}  {:<10}  {}/{} units",
        job.id, job.state, job.kernel, job.progress.units_done, job.progress.units_total,
    );
    if let Some(error) = &job.error {
        line.push_str(&format!("  error: {error}"));
    }
    line
}

async fn kernels(client: &Client, json: bool) -> Result<(), CliError> {
    let catalog = client.kernels().await?;
    if json {
        print_json(&catalog);
        return Ok(());
    }
    for kernel in &catalog.kernels {
        // The parameters' names are the properties of the kernel's JSON Schema.
        let params: Vec<&str> = kernel
            .params_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let origin = match &kernel.custom {
            None => String::new(),
            Some(custom) => format!(
                "  registered by {}{}",
                custom.owner.as_deref().unwrap_or("(no account)"),
                if custom.suspended.is_some() {
                    ", suspended"
                } else {
                    ""
                }
            ),
        };
        println!(
            "{:<11} v{}  params: {}  output: {}{origin}",
            kernel.id,
            kernel.version,
            params.join(", "),
            kernel.output_content_type,
        );
    }
    Ok(())
}

fn read_text(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::File {
        path: path.display().to_string(),
        source,
    })
}

fn print_custom_kernel(kernel: &CustomKernel) {
    println!("id:         {}", kernel.id);
    println!(
        "owner:      {}",
        kernel.owner.as_deref().unwrap_or("(no account)")
    );
    if let Some(reason) = &kernel.suspended {
        println!("suspended:  {reason}");
    }
    match serde_json::to_string_pretty(&kernel.manifest) {
        Ok(manifest) => println!("manifest:\n{manifest}"),
        Err(e) => println!("manifest:   (cannot print: {e})"),
    }
    if let Some(runs) = &kernel.measured {
        println!(
            "measured:   {} results, {:.0} ms a unit; the declared FLOPs make that {:.2} GFLOP/s",
            runs.results, runs.mean_unit_ms, runs.declared_gflop_per_s
        );
    }
    println!("source:\n{}", kernel.source);
}

fn job_params(pairs: &[String], file: Option<&std::path::Path>) -> Result<Value, CliError> {
    let base = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
                path: path.display().to_string(),
                source,
            })?;
            match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(CliError::Usage(format!(
                        "{}: the parameters file must hold a JSON object",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(CliError::Usage(format!(
                        "{}: not JSON: {e}",
                        path.display()
                    )))
                }
            }
        }
        None => Map::new(),
    };
    let pairs = pairs
        .iter()
        .map(|p| params::pair(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(format!("--param {e}")))?;
    Ok(Value::Object(params::merge(base, &pairs)))
}

fn read_inputs(args: &[String]) -> Result<Vec<Input>, CliError> {
    args.iter()
        .map(|arg| {
            let (name, path) =
                params::pair(arg).map_err(|e| CliError::Usage(format!("--input {e}")))?;
            let bytes = std::fs::read(&path).map_err(|source| CliError::File {
                path: path.clone(),
                source,
            })?;
            let file_name = std::path::Path::new(&path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone());
            Ok(Input {
                name,
                file_name,
                bytes,
            })
        })
        .collect()
}

/// Follows the job's event stream with a progress bar (units done of total, with an
/// ETA from the rate so far) until the job ends.
async fn watch(client: &Client, id: &str) -> Result<(), CliError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<9} [{elapsed_precise}] {wide_bar} {pos}/{len} units, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut events = client.events(id).await?;
    let mut last = None;
    let followed = loop {
        let event = match events.next_raw().await {
            Ok(Some(event)) => event,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // Events the stream does not promise are skipped, as the job goes on.
        let event = JobEvent::parse(&event.name, &event.data).ok();
        if let Some(JobEvent::Progress(progress)) = &event {
            bar.set_length(u64::try_from(progress.units_total).unwrap_or(0));
            bar.set_position(u64::try_from(progress.units_done).unwrap_or(0));
            bar.set_message(progress.state.to_string());
        }
        last = event;
    };
    bar.finish_and_clear();
    followed?;
    match last {
        Some(JobEvent::Ended(job)) => match job.state {
            JobState::Done => {
                eprintln!("job {id} done");
                Ok(())
            }
            state => Err(CliError::JobEnded {
                id: id.to_owned(),
                state: state.to_string(),
                error: job.error,
            }),
        },
        Some(JobEvent::Error(text)) => Err(CliError::Protocol(format!(
            "the relay could not follow job {id}: {text}"
        ))),
        _ => Err(CliError::StreamClosed(id.to_owned())),
    }
}
