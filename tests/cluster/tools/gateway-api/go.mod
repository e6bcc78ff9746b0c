// Pins the Gateway API release whose HTTPRoute CRD the cluster tests install, so that the
// chart's gateway variant is checked against the real schema (build-tools.sh copies the CRD
// out of the module; nothing is compiled).
module tapedeck.local/cluster-tools/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
