"""The local fleet: real tritonserver, moto S3, HAProxy and Prometheus processes on 127.0.0.1."""
