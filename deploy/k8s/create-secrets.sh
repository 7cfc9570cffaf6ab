#!/usr/bin/env bash
# Creates or updates every Secret an overlay references, in one go (README, "Secrets").
#
#   deploy/k8s/create-secrets.sh dev    internal token, Redis password, agent key; the provider
#                                       keys whose variable is set (real adapters start at 0 in dev)
#   deploy/k8s/create-secrets.sh prod   all of those (provider keys required), the tenants file,
#                                       TLS certificates, the Consul agents' CA and Consul ACL tokens
#
# Inputs come from the environment, never from arguments (they would land in shell history):
#   OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY     provider keys
#   LLMMESH_QUOTA_REDIS_PASSWORD, LLMMESH_AGENT_ROUTER_KEY (may be empty)
#   LLMMESH_TENANTS_FILE     prod: the tenants file (`llmmesh auth new-key` prints its entries)
#   LLMMESH_TLS_DIR          prod: ca.crt and {router,agent,provider}.{crt,key}; unset when
#                            cert-manager issues them (deploy/k8s/cert-manager)
#   CONSUL_CA_FILE           prod: the Consul agents' CA; default: copied from Secret
#                            consul-ca-cert in namespace ${CONSUL_NAMESPACE:-consul} (Helm chart)
#   LLMMESH_CONSUL_TOKEN_ROUTER, _AGENT, _PROVIDER_OPENAI, _PROVIDER_ANTHROPIC, _PROVIDER_GOOGLE
#                            prod: one ACL token per workload (README, "Consul ACLs")
# The internal token is generated once and kept on later runs: router and adapters must agree.
set -euo pipefail

overlay=${1:-}
[[ $overlay == dev || $overlay == prod ]] || { echo "usage: $0 dev|prod" >&2; exit 2; }
namespace=${LLMMESH_NAMESPACE:-llmmesh}
kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"

# create_secret <overlays> <name> <kubectl create secret arguments...>: only for the overlays listed.
create_secret() {
  local overlays=$1 name=$2
  shift 2
  [[ ",$overlays," == *",$overlay,"* ]] || return 0
  kubectl -n "$namespace" create secret "$@" "$name" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  echo "secret/$name"
}

# The value already stored under <secret> <key>, or a new random one.
kept_or_new() {
  local current
  current=$(kubectl -n "$namespace" get secret "$1" -o "jsonpath={.data.$2}" 2>/dev/null | base64 -d || true)
  if [[ -n $current ]]; then printf '%s' "$current"; else openssl rand -hex 32; fi
}

# A provider key: required in prod; in dev, false (skip the Secret) when its variable is empty.
have_key() {
  [[ -n ${!1:-} ]] && return 0
  if [[ $overlay == prod ]]; then echo "$1 is required for prod" >&2; exit 2; fi
  return 1
}

tls_files() {  # --from-file arguments for <name>'s certificate, key and the mesh CA
  local dir=${LLMMESH_TLS_DIR:?set LLMMESH_TLS_DIR (or let cert-manager issue the certificates)}
  echo "--from-file=tls.crt=$dir/$1.crt --from-file=tls.key=$dir/$1.key --from-file=ca.crt=$dir/ca.crt"
}

consul_ca() {
  if [[ -n ${CONSUL_CA_FILE:-} ]]; then cat "$CONSUL_CA_FILE"; return; fi
  kubectl -n "${CONSUL_NAMESPACE:-consul}" get secret consul-ca-cert -o 'jsonpath={.data.tls\.crt}' | base64 -d
}

token() {  # a Consul ACL token from LLMMESH_CONSUL_TOKEN_<SUFFIX>
  local variable="LLMMESH_CONSUL_TOKEN_$1"
  printf '%s' "${!variable:?set $variable (README, \"Consul ACLs\")}"
}

create_secret dev,prod llmmesh-internal generic --from-literal=token="$(kept_or_new llmmesh-internal token)"
create_secret dev,prod llmmesh-quota-redis generic --from-literal=password="${LLMMESH_QUOTA_REDIS_PASSWORD:-}"
create_secret dev,prod llmmesh-agent-router-key generic --from-literal=key="${LLMMESH_AGENT_ROUTER_KEY:-}"
have_key OPENAI_API_KEY && create_secret dev,prod llmmesh-provider-openai generic --from-literal=api-key="$OPENAI_API_KEY"
have_key ANTHROPIC_API_KEY \
  && create_secret dev,prod llmmesh-provider-anthropic generic --from-literal=api-key="$ANTHROPIC_API_KEY"
have_key GEMINI_API_KEY && create_secret dev,prod llmmesh-provider-google generic --from-literal=api-key="$GEMINI_API_KEY"

[[ $overlay == prod ]] || exit 0
create_secret prod llmmesh-tenants generic --from-file=tenants.yaml="${LLMMESH_TENANTS_FILE:?set LLMMESH_TENANTS_FILE}"
if [[ -n ${LLMMESH_TLS_DIR:-} ]]; then
  # shellcheck disable=SC2046 # the file arguments are meant to split
  {
    create_secret prod llmmesh-router-tls generic --type=kubernetes.io/tls $(tls_files router)
    create_secret prod llmmesh-agent-tls generic --type=kubernetes.io/tls $(tls_files agent)
    create_secret prod llmmesh-provider-tls generic --type=kubernetes.io/tls $(tls_files provider)
  }
else
  echo "LLMMESH_TLS_DIR unset: llmmesh-{router,agent,provider}-tls come from cert-manager (deploy/k8s/cert-manager)"
fi
create_secret prod llmmesh-consul-agent-ca generic --from-file=ca.crt=<(consul_ca)
create_secret prod llmmesh-consul-router generic --from-literal=token="$(token ROUTER)"
create_secret prod llmmesh-consul-agent generic --from-literal=token="$(token AGENT)"
create_secret prod llmmesh-consul-provider-openai generic --from-literal=token="$(token PROVIDER_OPENAI)"
create_secret prod llmmesh-consul-provider-anthropic generic --from-literal=token="$(token PROVIDER_ANTHROPIC)"
create_secret prod llmmesh-consul-provider-google generic --from-literal=token="$(token PROVIDER_GOOGLE)"
