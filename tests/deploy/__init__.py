"""Tests of deploy/: the image, the Kubernetes manifests, the compose demo, validate.sh."""
