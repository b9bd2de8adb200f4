package io.blkstack.dm.thin.metadata;

/** The metadata device has no free block left for the transaction in progress. */
public final class MetadataFullException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    public MetadataFullException(String message) {
        super(message);
    }
}
