"""The txverify contract: generated protobuf code, the slip QR codec, errors and units."""
