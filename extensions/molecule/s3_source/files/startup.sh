#!/usr/bin/env bash
# Runs before each component starts, as the airflow user (MWAA's startup.sh).
set -eu
echo "startup ran for $(basename "${AIRFLOW_CONFIG:-airflow.cfg}" .cfg) at $(date +%s)" >> "$AIRFLOW_HOME/startup.log"
