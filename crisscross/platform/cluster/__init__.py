"""The cluster's own services: the cluster file's checks (`check`) and the MLflow tracking
server on the head (`tracking_server`)."""
