import CSystem
import Foundation

/// Changes under a folder, through inotify on a loop. inotify is not recursive: every folder of the
/// tree gets a watch, and `watchTree()` adds the ones created since.
public final class FolderWatcher: IOHandler {
    private let fd: Int32
    private let folder: String
    private let changed: () -> Void

    /// nil when inotify is not available.
    public init?(folder: String, loop: EventLoop, changed: @escaping () -> Void) {
        fd = cs_inotify_init()
        guard fd >= 0 else { return nil }
        self.folder = folder
        self.changed = changed
        watchTree()
        _ = loop.register(fd: fd, events: IOEvents.readable, handler: self)
    }

    /// Adds a watch for the folder and each folder below it; watching a folder twice is harmless.
    public func watchTree() {
        _ = cs_inotify_watch_folder(fd, folder)
        guard let enumerator = FileManager.default.enumerator(atPath: folder) else { return }
        while let relative = enumerator.nextObject() as? String {
            if enumerator.fileAttributes?[.type] as? FileAttributeType == .typeDirectory {
                _ = cs_inotify_watch_folder(fd, (folder as NSString).appendingPathComponent(relative))
            }
        }
    }

    public func ioReady(_ events: UInt32) {
        if cs_inotify_drain(fd) > 0 { changed() }
    }
}
