//! The command line: one binary, one verb per job.

use std::{io::Read, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::{
    admission::Admission,
    build::{BuildSettings, DEFAULT_APP_IMAGE},
    crd,
    render::{RenderError, render},
};

/// A Kubernetes operator that runs visit-counter web apps as StatefulSets.
#[derive(Debug, Parser)]
#[command(name = "visitcounter", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the VisitCounterApp CustomResourceDefinition as YAML (the same
    /// bytes as crds/visitcounterapp.yaml).
    Crd,
    /// Print, offline, the objects the operator would apply for the
    /// VisitCounterApp objects in a file, as a YAML stream for `kubectl apply -f -`.
    Render {
        /// File of one or more VisitCounterApp documents; `-` reads standard input.
        #[arg(
            short = 'f',
            long = "filename",
            value_name = "FILE",
            env = "VISITCOUNTER_RENDER_FILE"
        )]
        file: PathBuf,
        /// Image of apps whose spec names none.
        #[arg(long, value_name = "IMAGE", env = "VISITCOUNTER_DEFAULT_IMAGE", default_value = DEFAULT_APP_IMAGE)]
        default_image: String,
    },
}

/// Why a verb failed; printed on stderr with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot write the CRD as YAML: {0}")]
    Crd(#[from] serde_saphyr::SerializeError),
}

/// Runs a verb that prints its result, and returns what to print on stdout.
pub fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Crd => Ok(crd::yaml()?),
        Command::Render { file, default_image } => {
            let (source, input) = read_input(&file)?;
            let settings = BuildSettings { default_image };
            Ok(render(&input, &source, &Admission::new(), &settings)?)
        }
    }
}

fn read_input(file: &PathBuf) -> Result<(String, String), CliError> {
    if file.as_os_str() == "-" {
        let mut input = String::new();
        let source = "<stdin>".to_owned();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|source_err| CliError::Read {
                path: source.clone(),
                source: source_err,
            })?;
        return Ok((source, input));
    }
    let path = file.display().to_string();
    let input = std::fs::read_to_string(file).map_err(|source| CliError::Read {
        path: path.clone(),
        source,
    })?;
    Ok((path, input))
}
