// Pins the KEDA release whose ScaledObject CRD the cluster tests install, so that the chart's
// ScaledObject is checked against the real schema (build-tools.sh copies the CRD out of the
// module; nothing is compiled).
module tapedeck.local/cluster-tools/keda

go 1.26.0

require github.com/kedacore/keda/v2 v2.18.1
