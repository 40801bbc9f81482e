#!/usr/bin/env bash
# Build kdray's dependency image (cluster/Dockerfile) and push it to this AWS account's ECR,
# repository "kdray", where every node of cluster/aws.yaml pulls it from. Run it once, and
# again when pyproject.toml's dependencies or the pinned torch change (then change the tag
# here and in cluster/aws.yaml). Needs docker and AWS credentials that may push to ECR.
set -euo pipefail
cd "$(dirname "$0")/.."
REGION=${AWS_REGION:-us-east-1}
TAG=deps-torch2.14.1-cu130
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
REGISTRY=$ACCOUNT.dkr.ecr.$REGION.amazonaws.com

aws ecr describe-repositories --region "$REGION" --repository-names kdray >/dev/null 2>&1 \
  || aws ecr create-repository --region "$REGION" --repository-name kdray >/dev/null
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp pyproject.toml "$context/"  # the image needs only the dependency list
docker build --platform linux/amd64 -f cluster/Dockerfile -t "$REGISTRY/kdray:$TAG" "$context"
aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
docker push "$REGISTRY/kdray:$TAG"
docker logout "$REGISTRY"
echo "pushed $REGISTRY/kdray:$TAG"
