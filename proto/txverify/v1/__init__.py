"""Generated code of the txverify.v1 protobuf package (do not edit; `make proto`)."""
