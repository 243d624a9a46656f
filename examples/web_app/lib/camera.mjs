// The camera through getUserMedia (needs a secure context: localhost or https), one frame at a time.

export class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("this page has no camera access (it needs https or localhost and a camera)");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    this.video.srcObject = this.stream;
    await this.video.play();
  }

  get running() {
    return this.stream !== null && this.video.videoWidth > 0;
  }

  stop() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    this.video.srcObject = null;
  }
}
