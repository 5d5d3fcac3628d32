#!/usr/bin/env bash
# One release of bikerental-api to the cluster of the current kubectl context:
#
#   deploy/kubernetes/deploy.sh deploy/kubernetes/overlays/example        (just k8s-deploy OVERLAY)
#
#   1. render the overlay once (the Jobs get a release suffix: Jobs are immutable)
#   2. apply everything that is neither a Job nor a rollout step: namespace, ConfigMaps, Secrets, Services,
#      NetworkPolicies, PDBs, HPA, PVCs, PostgreSQL, PgBouncer, Redis; wait for their Deployments/StatefulSets
#   3. with a new MLflow image, stop MLflow's server (scale to 0); create the mlflow-upgrade and migrate-expand Jobs,
#      wait for both (Complete; Failed or a time-out stops the release here with the Job's logs, before anything of
#      the new release serves)
#   4. apply the rollout step (the API's and MLflow's Deployments), wait for `kubectl rollout status`
#   5. create the migrate-contract Job and wait for it
#   6. delete all but the newest $KEEP_JOBS finished Jobs of each kind
#
# The images are the overlay's (CI sets the release's tag there: `kustomize edit set image bikerental-api=REG/api:TAG
# bikerental-api-tools=REG/api-tools:TAG`). Environment:
#   RELEASE          Job name suffix, [a-z0-9-], at most 20 characters (default: UTC time, yyyymmddhhmmss)
#   JOB_TIMEOUT      seconds to wait for the Jobs of one step (default 7500: above the Jobs' activeDeadlineSeconds)
#   ROLLOUT_TIMEOUT  `kubectl rollout status --timeout` (default 10m)
#   KEEP_JOBS        finished Jobs kept per kind (default 5)
#   KUBECTL          the kubectl to run (default kubectl)
set -euo pipefail

usage() { echo "usage: $0 OVERLAY_DIR" >&2; exit 2; }
[[ $# -eq 1 && -d $1 ]] || usage
overlay=$(cd "$1" && pwd)
kubectl=${KUBECTL:-kubectl}
release=${RELEASE:-$(date -u +%Y%m%d%H%M%S)}
job_timeout=${JOB_TIMEOUT:-7500}
rollout_timeout=${ROLLOUT_TIMEOUT:-10m}
keep_jobs=${KEEP_JOBS:-5}
[[ $release =~ ^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$ ]] || { echo "RELEASE '$release': use [a-z0-9-], at most 20" >&2; exit 2; }

step_label=bikerental/deploy-step
infra_selector="$step_label notin (job,rollout)"
rollout_selector="$step_label=rollout"
job_selector() { echo "$step_label=job,app.kubernetes.io/component in ($1)"; }

log() { printf '\n==> %s\n' "$*" >&2; }

# ---- 1. render ------------------------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A wrapper kustomization around the overlay (kustomize wants a relative path) that renames the Jobs only.
cat >"$work/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work" "$overlay")
transformers:
  - |-
    apiVersion: builtin
    kind: PrefixSuffixTransformer
    metadata:
      name: release-suffix
    suffix: -$release
    fieldSpecs:
      - kind: Job
        path: metadata/name
EOF
rendered=$work/rendered.yaml
"$kubectl" kustomize "$work" >"$rendered"
log "release $release of $overlay ($(grep -c '^kind:' "$rendered") objects)"

# Prints "kind namespace name" for each object the command wrote.
objects() { "$@" -o jsonpath='{.kind} {.metadata.namespace} {.metadata.name}{"\n"}'; }

wait_workloads() { # lines of "kind namespace name": wait for each Deployment/StatefulSet to roll out
    local kind ns name failed=0
    while read -r kind ns name; do
        case $kind in
            Deployment | StatefulSet)
                "$kubectl" -n "$ns" rollout status "${kind,,}/$name" --timeout="$rollout_timeout" || failed=1 ;;
        esac
    done
    return $failed
}

show_job() { # namespace name: what a person needs to see why a Job failed
    "$kubectl" -n "$1" describe "job/$2" >&2 || true
    log "logs of job/$2"
    "$kubectl" -n "$1" logs -l "batch.kubernetes.io/job-name=$2" --all-containers --prefix --tail=-1 >&2 || true
}

wait_jobs() { # lines of "Job namespace name": until all Complete; non-zero once one Failed or at the time-out
    local jobs=() line ns name complete failed pending deadline=$((SECONDS + job_timeout))
    while read -r line; do [[ -n $line ]] && jobs+=("$line"); done
    [[ ${#jobs[@]} -gt 0 ]] || { echo "no Job was created" >&2; return 1; }
    while :; do
        pending=0
        for line in "${jobs[@]}"; do
            read -r _ ns name <<<"$line"
            complete=$("$kubectl" -n "$ns" get "job/$name" -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')
            failed=$("$kubectl" -n "$ns" get "job/$name" -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')
            if [[ $failed == True ]]; then
                log "job/$name FAILED: the release stops here"
                show_job "$ns" "$name"
                return 1
            fi
            [[ $complete == True ]] || pending=$((pending + 1))
        done
        ((pending == 0)) && break
        if ((SECONDS >= deadline)); then
            log "time-out after ${job_timeout}s waiting for: ${jobs[*]}"
            for line in "${jobs[@]}"; do read -r _ ns name <<<"$line"; show_job "$ns" "$name"; done
            return 1
        fi
        sleep 5
    done
    for line in "${jobs[@]}"; do read -r _ ns name <<<"$line"; log "job/$name complete"; done
}

run_jobs() { # components: create this release's Jobs of those components, wait for all of them
    if ! objects "$kubectl" create -f "$rendered" -l "$(job_selector "$1")" >"$work/jobs"; then
        cat "$work/jobs" >&2
        echo "creating the Jobs failed (those created, if any, are listed above)" >&2
        return 1
    fi
    cat "$work/jobs" >&2
    [[ $(wc -l <"$work/jobs") -eq $(tr ',' '\n' <<<"$1" | wc -l) ]] || { echo "expected one Job per kind in: $1" >&2; return 1; }
    wait_jobs <"$work/jobs"
}

# ---- 2. config and infrastructure ----------------------------------------------------------------------------
log "config and infrastructure"
objects "$kubectl" apply -f "$rendered" -l "$infra_selector" >"$work/infra"
cat "$work/infra" >&2
wait_workloads <"$work/infra"

# ---- 3. MLflow's schema and the expand migrations, side by side ----------------------------------------------
# A new MLflow image means MLflow's schema moves: its old server must be gone first (the upgrade refuses while
# others are connected, and an old server must not run on a newer schema). MLflow is down until step 4 starts the
# new one. Same image: the store is at its head already and the Job has nothing to do, so the server keeps running.
mlflow_selector="app.kubernetes.io/name=mlflow,$rollout_selector"
read -r mlflow_ns mlflow_next < <("$kubectl" create --dry-run=client -f "$rendered" -l "$mlflow_selector" \
    -o jsonpath='{.metadata.namespace} {.spec.template.spec.containers[0].image}{"\n"}' || true) || true
if [[ -n ${mlflow_next:-} ]]; then
    mlflow_now=$("$kubectl" -n "$mlflow_ns" get deployment/mlflow --ignore-not-found \
        -o jsonpath='{.spec.template.spec.containers[0].image}')
    if [[ -n $mlflow_now && $mlflow_now != "$mlflow_next" ]]; then
        log "MLflow $mlflow_now -> $mlflow_next: stopping its server for the upgrade of its schema"
        "$kubectl" -n "$mlflow_ns" scale deployment/mlflow --replicas=0
        mlflow_stopped=1
        # No pod left to match is success; should one linger, the Job refuses and names its session.
        "$kubectl" -n "$mlflow_ns" wait --for=delete pod -l app.kubernetes.io/name=mlflow \
            --timeout="$rollout_timeout" || true
    fi
fi

log "jobs: mlflow-upgrade, migrate-expand"
if ! run_jobs "mlflow-upgrade,migrate-expand"; then
    echo "Nothing was rolled out. A Job still running was left alone: see kubectl get jobs -l $step_label=job" >&2
    if [[ -n ${mlflow_stopped:-} ]]; then
        echo "MLflow's server was stopped for the upgrade; a failed upgrade leaves its store as it was, so the old" \
            "server can go back: $kubectl -n $mlflow_ns scale deployment/mlflow --replicas=1" >&2
    fi
    exit 1
fi

# ---- 4. the new release serves -------------------------------------------------------------------------------
log "rollout"
objects "$kubectl" apply -f "$rendered" -l "$rollout_selector" >"$work/rollout"
cat "$work/rollout" >&2
if ! wait_workloads <"$work/rollout"; then
    echo "The rollout did not finish: the contract step was not run. The expand migrations are compatible with the" \
        "previous release: kubectl rollout undo deployment/NAME -n NAMESPACE puts it back." >&2
    exit 1
fi

# ---- 5. contract ---------------------------------------------------------------------------------------------
log "job: migrate-contract"
run_jobs "migrate-contract" || exit 1

# ---- 6. keep the newest finished Jobs of each kind -----------------------------------------------------------
log "pruning Jobs (keeping $keep_jobs of each kind)"
ns=$(awk '{print $2; exit}' "$work/jobs")
for component in mlflow-upgrade migrate-expand migrate-contract; do
    "$kubectl" -n "$ns" get jobs -l "$(job_selector "$component")" --sort-by=.metadata.creationTimestamp -o name \
        | head -n "-$keep_jobs" | xargs -r "$kubectl" -n "$ns" delete --wait=false
done
log "release $release done"
