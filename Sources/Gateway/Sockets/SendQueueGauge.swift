import Synchronization

/// Bytes queued for a socket and not yet written, published by the owning loop so senders on other
/// loops can see a slow reader before the owner's mailbox runs.
class SendQueueGauge {
    let bytes = Atomic<Int>(0)
}
