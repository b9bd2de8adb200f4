package io.blkstack.dm.thin.metadata;

/** Metadata on the device does not have the expected shape; the message names the block and what is wrong. */
public final class CorruptMetadataException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public CorruptMetadataException(String message) {
        super(message);
    }
}
