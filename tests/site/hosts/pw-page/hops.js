// Images whose first URL is allowed and whose redirect hop is not (and one that is).
var port = location.port;
function hop(from, to) {
  return "http://" + from + ":" + port + "/_/respond?status=302&h=Location:" + encodeURIComponent(to);
}
var images = [
  hop("pw-page.test", "http://pw-cdn.test:" + port + "/robots-blocked/hop.png"),  // robots.txt disallows
  hop("pw-page.test", "http://pw-page.test:" + port + "/people/jane.png"),       // under an objection
  hop("pw-cdn.test", "http://pw-page.test:" + port + "/ADMIN/hop.png"),          // deny_paths, other case
  hop("pw-page.test", "/ok.png"),                                                 // an allowed hop
  // two hops: the first to an allowed URL, the second to the objection
  hop("pw-page.test", hop("pw-cdn.test", "http://pw-page.test:" + port + "/people/jane.png?2"))
];
document.addEventListener("DOMContentLoaded", function () {
  images.forEach(function (src) {
    var img = document.createElement("img");
    img.src = src;
    document.body.appendChild(img);
  });
});
