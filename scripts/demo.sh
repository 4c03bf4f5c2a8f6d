#!/usr/bin/env bash
# The seed report's journey on this machine: a local Kubernetes control plane
# whose pods really run (scripts/cluster.sh up --real-pods, as root), the
# operator installed by its Helm chart, the seed's two apps, visits through
# each NodePort at the node's address, and what the seed's user looked at: kubectl get
# po,sts,svc,pvc, the URLs, each pod's /data/visits.json and the app's
# status.visits.total. The control plane is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/cluster.sh up --real-pods
eval "$(scripts/cluster.sh env --real-pods)"


release=visitcounter-operator
if ! helm status "$release" -n visitcounter-system >/dev/null 2>&1; then
  echo "+ helm install $release charts/visitcounter-operator -n visitcounter-system --create-namespace --set visitsIntervalSeconds=5 --wait"
  helm install "$release" charts/visitcounter-operator -n visitcounter-system --create-namespace \
    --set visitsIntervalSeconds=5 --wait --timeout 3m >/dev/null
fi
kubectl -n visitcounter-system get pods -o wide

echo "+ kubectl apply -f examples/app-python.yaml -f examples/app-go.yaml"
kubectl apply -f examples/app-python.yaml -f examples/app-go.yaml
for app in app-python app-go; do
  kubectl wait --for=condition=Ready "vca/$app" --timeout=180s >/dev/null
done

echo
echo "+ kubectl get po,sts,svc,pvc"
kubectl get po,sts,svc,pvc
echo
for app in app-python app-go; do
  port=$(kubectl get svc "$app" -o jsonpath='{.spec.ports[0].nodePort}')
  echo "$app: http://$VISITCOUNTER_NODE_ADDRESS:$port/"
  for _ in 1 2 3 4 5 6; do
    curl -s "http://$VISITCOUNTER_NODE_ADDRESS:$port/" | sed -n 's|.*<h1>\(.*\)</h1><p>Served by pod <code>\(.*\)</code>.*|  \1 (served by \2)|p'
  done
done
echo
sleep 7 # one visit poll of the operator
for app in app-python app-go; do
  for claim in $(kubectl get pvc -l "app.kubernetes.io/instance=$app" -o name); do
    path=$(kubectl get pv "$(kubectl get "$claim" -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.hostPath.path}')
    echo "${claim#persistentvolumeclaim/} /data/visits.json: $(cat "$path/visits.json" 2>/dev/null || echo '(no visit yet)')"
  done
  echo "$app status.visits.total: $(kubectl get vca "$app" -o jsonpath='{.status.visits.total}')"
done
echo
echo "The control plane keeps running. Point kubectl at it with"
echo '  eval "$(scripts/cluster.sh env --real-pods)"'
echo "and stop it with"
echo "  scripts/cluster.sh down --real-pods"
